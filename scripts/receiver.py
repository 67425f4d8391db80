"""A webhook receiver that verifies Herald's signatures with the official
Standard Webhooks library (an implementation independent of Herald's).

Each request is verified against every --secret separately and recorded as
one JSON line (to --out, or stdout): the delivery id, the event type found in
the body, which secrets verified it, and the body and headers as received.
The first line on stdout is `listening on PORT`.

    python receiver.py --port 0 --secret whsec_... [--secret whsec_...] [--out FILE] [--pretty]
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def event_type(body, headers):
    if "ce-type" in headers:  # CloudEvents binary mode
        return headers["ce-type"]
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict):
        for field in ("event", "event_type", "type"):
            if isinstance(doc.get(field), str):
                return doc[field]
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--out")
    parser.add_argument("--pretty", action="store_true", help="human-readable lines instead of JSON")
    parser.add_argument("--status", type=int, default=204, help="status to answer verified requests with")
    args = parser.parse_args()

    verifiers = [Webhook(s) for s in args.secret]
    out = open(args.out, "a", buffering=1) if args.out else sys.stdout
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = []
            errors = []
            for i, verifier in enumerate(verifiers):
                try:
                    verifier.verify(body, headers, json_parse=False)
                    verified.append(i)
                except (WebhookVerificationError, ValueError) as e:
                    errors.append(f"secret {i}: {e}")
            ok = bool(verified) or not verifiers
            record = {
                "path": self.path,
                "webhook_id": headers.get("webhook-id"),
                "event_type": event_type(body, headers),
                "verified_with": verified,
                "errors": errors,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
            }
            with lock:
                if args.pretty:
                    mark = "verified" if verified else "NOT VERIFIED"
                    out.write(f"received {record['event_type'] or '?':32} {record['webhook_id']}  signature {mark}\n")
                else:
                    out.write(json.dumps(record) + "\n")
                out.flush()
            self.send_response(args.status if ok else 400)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
