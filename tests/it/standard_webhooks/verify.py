"""Verifies requests with the Standard Webhooks library for Python (PyPI
`standardwebhooks`), as a receiver in Python would. Reads a JSON list of
checks from stdin, each {"secret", "headers": {name: value}, "body": base64},
and writes a JSON list of results: null when the request verifies with the
secret, or the library's error.

    python verify.py < checks.json
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook


def verify(check):
    try:
        Webhook(check["secret"]).verify(base64.b64decode(check["body"]), check["headers"], json_parse=False)
        return None
    except Exception as e:  # the library's own errors and what it lets through (a body not UTF-8)
        return f"{type(e).__name__}: {e}"


json.dump([verify(check) for check in json.load(sys.stdin)], sys.stdout)
