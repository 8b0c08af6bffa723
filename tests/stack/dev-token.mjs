// Prints a development JWT for the stack `make run` starts: HS256, signed with the
// JWT_HS256_SECRET of wrangler/.dev.vars, for the issuer and audience of auth-validator's
// development environment, tenant `dev-tenant`, every API scope, valid for 12 hours.
//
//   TOKEN=$(node tests/stack/dev-token.mjs [tenant])
//
// Development only: deployed environments never accept these (their HS256 secret differs, or
// HS256 is off).
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";

const wrangler = path.join(import.meta.dirname, "..", "..", "wrangler");

function value(file, name) {
  const text = readFileSync(path.join(wrangler, file), "utf8");
  const match = new RegExp(`^${name}\\s*=\\s*["']?([^"'\\n]+)["']?\\s*$`, "m").exec(text);
  if (!match) throw new Error(`${name} not found in wrangler/${file}`);
  return match[1];
}

let secret;
try {
  secret = value(".dev.vars", "JWT_HS256_SECRET");
} catch (error) {
  console.error(`dev-token: ${error.message} (run \`make run\` once; it creates wrangler/.dev.vars)`);
  process.exit(1);
}
const encode = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const header = encode({ alg: "HS256", typ: "JWT" });
const claims = encode({
  iss: value("auth-validator.toml", "JWT_ISSUER"),
  aud: value("auth-validator.toml", "JWT_AUDIENCE"),
  sub: "developer",
  tenant_id: process.argv[2] ?? "dev-tenant",
  scope: "calls:read calls:write agents:admin",
  iat: now,
  exp: now + 12 * 3600,
});
const signature = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
console.log(`${header}.${claims}.${signature}`);
