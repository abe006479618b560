// Verifies outbound webhooks with the standardwebhooks library (the reference
// JavaScript verifier of standardwebhooks.com), for tests/blackbox/test_outbound.py.
//
// stdin:  a JSON array of {"secret": "whsec_...", "headers": {...}, "body_b64": "..."}
// stdout: a JSON array, one per case: {"ok": true, "payload": <parsed body>} or
//         {"ok": false, "error": "<the library's message>"}
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Webhook } = require("standardwebhooks");

const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map((c) => {
  try {
    const payload = new Webhook(c.secret).verify(Buffer.from(c.body_b64, "base64"), c.headers);
    return { ok: true, payload };
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
});
process.stdout.write(JSON.stringify(out));
