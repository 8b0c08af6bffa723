// Verifies the X-Aybiza-Signature header of a request from AYBIZA (tool calls, webhooks).
// The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`; each v1 is the HMAC-SHA256, keyed with
// your signing secret (the whole `whsec_…` string), of `${t}.${rawBody}`. Pass the raw body
// bytes exactly as received (before any JSON parsing), and every secret you accept (during a
// rotation: the new one and the previous one). Refuses a timestamp more than `toleranceSecs`
// away from your clock (replays). Node 18 or later.
import { createHmac, timingSafeEqual } from "node:crypto";

export function verifyAybizaSignature(header, rawBody, secrets, { toleranceSecs = 300, now = Math.floor(Date.now() / 1000) } = {}) {
  if (typeof header !== "string") return false;
  let timestamp = null;
  const signatures = [];
  for (const part of header.split(",")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    const key = part.slice(0, at).trim();
    const value = part.slice(at + 1).trim();
    if (key === "t") {
      if (timestamp !== null || !/^\d+$/.test(value)) return false;
      timestamp = Number(value);
    } else if (key === "v1") {
      signatures.push(value);
    }
  }
  if (timestamp === null || signatures.length === 0) return false;
  if (Math.abs(now - timestamp) > toleranceSecs) return false;
  const body = typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : Buffer.from(rawBody);
  for (const secret of [].concat(secrets)) {
    const expected = createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest();
    for (const signature of signatures) {
      const given = Buffer.from(signature, "hex");
      if (given.length === expected.length && timingSafeEqual(given, expected)) return true;
    }
  }
  return false;
}
