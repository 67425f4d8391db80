// Verifies requests with the Standard Webhooks library for Node.js (npm
// `standardwebhooks`), as a receiver in JavaScript would. Reads a JSON list of
// checks from stdin, each {"secret", "headers": {name: value}, "body": base64},
// and writes a JSON list of results: null when the request verifies with the
// secret, or the library's error.
//
//   node verify.js PATH_TO_THE_PACKAGE < checks.json
"use strict";
const { Webhook } = require(process.argv[2]);

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((check) => {
    try {
      new Webhook(check.secret).verify(Buffer.from(check.body, "base64"), check.headers, { jsonParse: false });
      return null;
    } catch (e) {
      return `${e.name}: ${e.message}`;
    }
  });
  process.stdout.write(JSON.stringify(results));
});
