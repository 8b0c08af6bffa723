// The web console (workers/voice-router/console) end to end, in a real browser: Debian's
// Chromium driven by playwright-core against the whole stack (the four Workers in workerd with
// voice-router's static assets, the origin, the Bedrock emulator, PostgreSQL/Redis when the test
// command started them). One stack for the file. A person signs in with an API key, creates an
// agent (seeing the origin's validation error next to its field first), talks to it in the
// playground (typed), interrupts it, presses a key, ends the call, watches the calls list update
// live, reads that call's transcript with its latency chart (and a live call's transcript grow),
// reads usage per day as a chart, signs out, and signs in again with a JWT. Each page is
// screenshotted and checked with axe-core (no serious or critical
// violation); the console's first paint is measured; the static assets carry the security
// headers from their `_headers` file while the Worker still answers /api, /voice and /health.
//
// Inputs beside the harness's: CHROMIUM_BIN (default /usr/bin/chromium). Screenshots go to
// CONSOLE_ARTIFACTS_DIR, default $CARGO_TARGET_DIR/console-test (or target/console-test).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { hs256Jwt, json, startEmulator, startOrigin, startWorkers, withTimeout } from "./harness.mjs";
import { checkConsole } from "../../wrangler/smoke.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const consoleDir = path.join(root, "workers/voice-router/console");
const requireFromConsole = createRequire(path.join(consoleDir, "package.json"));
const { chromium } = requireFromConsole("playwright-core");
const AXE_SOURCE = readFileSync(requireFromConsole.resolve("axe-core/axe.min.js"), "utf8");

const ARTIFACTS = process.env.CONSOLE_ARTIFACTS_DIR ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "console-test");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
/** Issue 17: first paint under 1 s on loopback. */
const FIRST_PAINT_BUDGET_MS = 1000;

const HS256_SECRET = "console-e2e-hs256-secret-0123456789abcdef";
const ISSUER = "https://issuer.console-e2e";
const AUDIENCE = "aybiza-console-e2e";
const TENANT = "tenant-console";
const MODEL = "console-e2e-model";
const API_KEY = "ak_console_" + "K".repeat(24);
const UNKNOWN_KEY = "ak_console_" + "U".repeat(24);
const AGENT_ID = "front-desk";
const QUICK_REPLY = "We open at nine. We close at five.";
/** What an agent says when every model fails (`shared::agent::DEFAULT_FALLBACK_UTTERANCE`). */
const FALLBACK_LINE = "I'm sorry, I'm having trouble answering right now. Could you say that again?";

const sha256hex = (text) => createHash("sha256").update(text).digest("hex");
const jwt = (claims) => hs256Jwt(HS256_SECRET, { iss: ISSUER, aud: AUDIENCE, ...claims });

let emulator, origin, edge, browser, context, page;
const violations = [];
const timings = {};

/** Polls `check` until it returns a truthy value (or throws its last error at the deadline). */
async function until(check, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms${last ? `: ${last.message}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function screenshot(name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** axe-core on the page as it is; fails on any serious or critical violation. */
async function accessible(name) {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern (a <script>
  // tag would be refused, as it should be).
  if (!(await page.evaluate("typeof axe !== 'undefined'"))) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    [],
    `${name}: accessibility violations`,
  );
  return result.violations.length;
}

const field = (pathName) => page.locator(`[data-field="${pathName}"]`);
const fieldError = (pathName) => page.locator(`#f-${pathName.replace(/[^A-Za-z0-9]/g, "-")}-error`);
const agentEntries = () => page.locator(".transcript .entry.agent");

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 5, reply: QUICK_REPLY });
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_DEFAULT_MODELS: MODEL });
  edge = await startWorkers({
    originUrl: origin.url,
    vars: { "auth-validator": { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, JWT_DEFAULT_PLAN: "pro" } },
    secrets: { "auth-validator": { JWT_HS256_SECRET: HS256_SECRET, SESSION_TOKEN_SECRET: "console-e2e-session-token-secret-0123456789" } },
  });
  const auth = await edge.worker("auth-validator").getEnv();
  await auth.AUTH_KV.put(
    `apikey:${sha256hex(API_KEY)}`,
    JSON.stringify({ key_sha256: sha256hex(API_KEY), tenant_id: TENANT, subject: "console-key", scopes: ["calls:read", "calls:write", "agents:admin"], plan: "pro" }),
  );
  // Every request of this file comes from one address: only the limits the console meets in use.
  const limiter = await edge.worker("rate-limiter").getEnv();
  await limiter.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));

  // Playwright makes a fresh, empty --user-data-dir for every launch.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Every CSP violation the page meets is recorded (the init script runs outside the page's CSP).
  await context.addInitScript(() => {
    window.__cspViolations = [];
    addEventListener("securitypolicyviolation", (event) => window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`));
  });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("console", (message) => {
    if (message.type() === "error") violations.push(message.text());
  });
  page.on("pageerror", (error) => violations.push(`page error: ${error.message}`));
  console.log(`# console screenshots: ${ARTIFACTS}`);
});

after(async () => {
  await browser?.close();
  await edge?.close();
  await origin?.stop();
  await emulator?.stop();
  if (Object.keys(timings).length) console.log(`# console timings: ${JSON.stringify(timings)}`);
});

describe("the console's static assets in workerd", () => {
  test("served at /console/ with the _headers security headers; the Worker still answers its routes", async () => {
    const health = await fetch(`${edge.url}/health`);
    assert.equal(health.status, 200);
    assert.match(health.headers.get("content-type"), /json/);

    const redirect = await fetch(`${edge.url}/console`, { redirect: "manual" });
    assert.equal(redirect.status, 307);
    assert.equal(redirect.headers.get("location"), "/console/");

    for (const [asset, type] of [
      ["/console/", /^text\/html/],
      ["/console/app.js", /^text\/javascript/],
      ["/console/console.css", /^text\/css/],
    ]) {
      const response = await fetch(`${edge.url}${asset}`);
      assert.equal(response.status, 200, asset);
      assert.match(response.headers.get("content-type"), type, asset);
      const csp = response.headers.get("content-security-policy") ?? "";
      assert.match(csp, /default-src 'none'/, asset);
      assert.match(csp, /script-src 'self'(;|$)/, `${asset}: scripts from this origin only, none inline`);
      assert.match(csp, /connect-src 'self'(;|$)/, asset);
      assert.match(csp, /frame-ancestors 'none'/, asset);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:|\*/, `${asset}: no inline code, no other origin`);
      // The same values as the Worker's own answers (shared::headers::SECURITY).
      for (const name of ["x-content-type-options", "x-frame-options", "referrer-policy", "strict-transport-security"]) {
        assert.equal(response.headers.get(name), health.headers.get(name), `${asset}: ${name}`);
      }
      await response.arrayBuffer();
    }

    // The pipeline's smoke check passes on it.
    const logged = [];
    await checkConsole(edge.url, (line) => logged.push(line));
    assert.match(logged.join("\n"), /\/console\/: ok/);
    await assert.rejects(checkConsole(origin.url, () => {}), /is not the console: 40\d/, "a host without the assets fails it");

    // No asset shadows the Worker: an API route and an unknown console path are its JSON answers,
    // and the headers file itself is not served.
    const unauthenticated = await fetch(`${edge.url}/api/v1/agents`);
    assert.equal(unauthenticated.status, 401);
    assert.equal((await json(unauthenticated)).error.code, "missing_credential");
    for (const missing of ["/console/nope", "/_headers"]) {
      const response = await fetch(`${edge.url}${missing}`);
      assert.equal(response.status, 404, missing);
      assert.ok((await json(response)).error.request_id, missing);
    }
  });
});

describe("a person using the console in Chromium", () => {
  test("first paint of the sign-in page under 1 s on loopback; a bad key is refused, a good one signs in", async () => {
    await page.goto(`${edge.url}/console/`);
    const paint = await until(async () => {
      const entries = await page.evaluate(() => Object.fromEntries(performance.getEntriesByType("paint").map((entry) => [entry.name, entry.startTime])));
      return entries["first-contentful-paint"] === undefined ? null : entries;
    }, "the page paints");
    await page.getByLabel("API key or JWT").waitFor();
    const ready = await page.evaluate(() => performance.now());
    timings.first_paint_ms = Math.round(paint["first-paint"]);
    timings.first_contentful_paint_ms = Math.round(paint["first-contentful-paint"]);
    timings.sign_in_form_ms = Math.round(ready);
    console.log(`# console first paint ${timings.first_paint_ms} ms, first contentful paint ${timings.first_contentful_paint_ms} ms, sign-in form ready ${timings.sign_in_form_ms} ms`);
    assert.ok(paint["first-contentful-paint"] < FIRST_PAINT_BUDGET_MS, `first contentful paint ${paint["first-contentful-paint"]} ms`);
    assert.ok(ready < FIRST_PAINT_BUDGET_MS, `sign-in form ready at ${ready} ms`);
    await accessible("sign-in");
    await screenshot("01-sign-in");

    // The CSP is in force in the browser: an injected inline script and a third-party fetch are
    // refused (and reported), so the check at the end of the flow can catch a real violation.
    const probe = await page.evaluate(async () => {
      const script = document.createElement("script");
      script.textContent = "window.__inlineRan = true";
      document.body.append(script);
      const fetched = await fetch("https://third-party.example/").then(() => "fetched", () => "refused");
      await new Promise((resolve) => setTimeout(resolve, 50));
      const seen = window.__cspViolations.splice(0);
      return { ran: window.__inlineRan === true, fetched, seen };
    });
    assert.equal(probe.ran, false, "inline script ran");
    assert.equal(probe.fetched, "refused");
    assert.ok(probe.seen.some((v) => v.startsWith("script-src")) && probe.seen.some((v) => v.startsWith("connect-src")), probe.seen.join("; "));
    violations.length = 0;

    await page.getByLabel("API key or JWT").fill("not a credential");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#credential-error").getByText("Paste an API key").waitFor();

    await page.getByLabel("API key or JWT").fill(UNKNOWN_KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#credential-error").getByText("The edge refused this credential").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused credential is not kept");

    await page.getByLabel("API key or JWT").fill(API_KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    await page.getByText("No agents yet").waitFor();
    assert.deepEqual(await page.evaluate(() => Object.values(sessionStorage)), [API_KEY], "kept in session storage only");
    assert.equal(await page.evaluate(() => localStorage.length + document.cookie.length), 0);
    await accessible("agents (empty)");
    await screenshot("02-agents-empty");
  });

  test("create an agent: the origin's validation error shows next to the field it names", async () => {
    await page.getByRole("link", { name: "New agent" }).click();
    await page.getByRole("heading", { name: "New agent" }).waitFor();
    await page.getByLabel("Agent id").fill(AGENT_ID);
    await page.getByLabel("Name").fill("Front desk");
    await page.getByLabel("System prompt").fill("You answer questions about opening hours, briefly.");
    await page.getByLabel("Greeting").fill("Hello, front desk here.");
    await page.getByLabel("Model", { exact: true }).fill(MODEL);
    await page.getByLabel("Use the origin's default fallbacks").uncheck();
    await page.getByLabel("Temperature").fill("1.5");
    await page.getByLabel("Voice", { exact: true }).fill("en-US-Journey-O");
    await page.getByLabel("Language").fill("en-US");
    await page.getByRole("button", { name: "Create agent" }).click();

    // shared::agent: "inference.temperature must be between 0 and 1", field inference.temperature.
    await fieldError("inference.temperature").getByText("temperature must be between 0 and 1").waitFor();
    assert.equal(await field("inference.temperature").getAttribute("aria-invalid"), "true");
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("data-field")), "inference.temperature", "focus moves to the field");
    assert.equal(await page.locator(".field-error").count(), 1, "only that field shows an error");
    await accessible("agent editor with an error");
    await screenshot("03-agent-validation-error");

    await page.getByLabel("Temperature").fill("0.3");
    await page.getByRole("button", { name: "Create agent" }).click();
    await page.getByRole("heading", { name: `Agent ${AGENT_ID}` }).waitFor();
    await page.getByText(`Saved ${AGENT_ID}, version 1.`).waitFor();
    assert.equal(await page.locator(".field-error").count(), 0);

    // What the form sent is what the API holds.
    const stored = await json(await fetch(`${edge.url}/api/v1/agents/${AGENT_ID}`, { headers: { authorization: `Bearer ${API_KEY}` } }));
    assert.equal(stored.model, MODEL);
    assert.deepEqual(stored.fallback_models, []);
    assert.equal(stored.inference.temperature, 0.3);
    assert.equal(stored.inference.max_tokens, 512);
    assert.deepEqual(stored.voice, { voice: "en-US-Journey-O", language: "en-US" });
    assert.equal(stored.greeting, "Hello, front desk here.");

    // An edit keeps the rest; a second agent with the same id is refused next to the id.
    await page.getByLabel("Greeting").fill("Hello, you reached the front desk.");
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.getByText(`Saved ${AGENT_ID}, version 2.`).waitFor();

    // Tools are JSON: text that is not JSON is refused by the form, a tool the origin refuses
    // (plain http) shows its error on the field holding it (the origin names tools[0].url).
    const tools = page.getByLabel("Tools (JSON)", { exact: true });
    await tools.fill("[{");
    await page.getByRole("button", { name: "Save changes" }).click();
    await fieldError("tools").getByText("is not JSON").waitFor();
    const lookup = { name: "lookup_order", description: "Looks up an order.", input_schema: { type: "object" }, url: "http://tools.example.com/orders" };
    await tools.fill(JSON.stringify([lookup]));
    await page.getByRole("button", { name: "Save changes" }).click();
    await fieldError("tools").getByText("https").waitFor();
    assert.equal(await page.locator(".field-error").count(), 1, "only the tools field shows an error");
    await tools.fill("");
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.getByText(`Saved ${AGENT_ID}, version 3.`).waitFor();
    assert.equal((await json(await fetch(`${edge.url}/api/v1/agents/${AGENT_ID}`, { headers: { authorization: `Bearer ${API_KEY}` } }))).tools, undefined, "no tools");
    await accessible("agent editor");
    await screenshot("04-agent-edit");
    await page.goto(`${edge.url}/console/#/agents/new`);
    await page.getByLabel("Agent id").fill(AGENT_ID);
    await page.getByLabel("Name").fill("Impostor");
    await page.getByLabel("System prompt").fill("x");
    await page.getByRole("button", { name: "Create agent" }).click();
    await fieldError("id").getByText("exists already").waitFor();
    assert.equal((await json(await fetch(`${edge.url}/api/v1/agents/${AGENT_ID}`, { headers: { authorization: `Bearer ${API_KEY}` } }))).name, "Front desk");

    await page.getByRole("link", { name: "Agents" }).first().click();
    await page.getByRole("cell", { name: "Front desk" }).waitFor();
    await accessible("agents");
    await screenshot("05-agents");
  });

  test("talk to the agent in the playground: greeting, a typed turn, an interruption, a key press, the end", async () => {
    await page.getByRole("link", { name: `Talk to ${AGENT_ID}` }).click();
    await page.getByRole("heading", { name: "Playground" }).waitFor();
    await page.getByRole("button", { name: "Start call" }).click();
    // setup → the origin speaks the greeting as `text` tokens, closed by `last: true`.
    await until(async () => (await agentEntries().first().locator(".text").textContent()) === "Hello, you reached the front desk.", "the greeting streams in");
    await page.locator("p.muted code").getByText(/^call_/).waitFor();

    await page.getByLabel("Say something").fill("When are you open?");
    await page.getByRole("button", { name: "Send" }).click();
    await until(async () => (await agentEntries().nth(1).locator(".text").textContent()) === QUICK_REPLY, "the reply streams in");
    await page.getByText(/^first token \d+ ms$/).waitFor();

    // A long, slow reply; the person types over it once it has started.
    const clauses = Array.from({ length: 60 }, (_, i) => `item ${i + 1}`);
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 80, reply: `Here is the list, ${clauses.join(", ")}.` });
    const before = (await emulator.stats())[MODEL] ?? { cancelled: 0 };
    await page.getByLabel("Say something").fill("Tell me everything.");
    await page.getByRole("button", { name: "Send" }).click();
    await until(async () => ((await agentEntries().nth(2).locator(".text").textContent()) ?? "").includes("item 3"), "the long reply starts");
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 5, reply: QUICK_REPLY });
    await page.getByLabel("Say something").fill("Stop, just the hours please.");
    await page.getByRole("button", { name: "Send" }).click();
    const interrupted = agentEntries().nth(2);
    await interrupted.getByText("interrupted").waitFor();
    await until(async () => (await agentEntries().nth(3).locator(".text").textContent()) === QUICK_REPLY, "the reply after the interruption");
    const cut = await interrupted.locator(".text").textContent();
    assert.ok(cut.includes("item 3") && !cut.includes("item 60"), `the interrupted reply stopped where it was: ${cut}`);
    // The origin cancelled the model stream (the emulator saw the client go away).
    await until(async () => (await emulator.stats())[MODEL].cancelled > before.cancelled, "the origin cancels the interrupted stream");

    await page.getByRole("button", { name: "Key 5" }).click();
    await page.locator(".transcript .entry.dtmf").getByText("5").waitFor();

    // The model refuses: the agent's fallback line is the reply (never silence), and the wait ends.
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 5, reply: QUICK_REPLY, fault: { kind: "validation" } });
    await page.getByLabel("Say something").fill("Are you there?");
    await page.getByRole("button", { name: "Send" }).click();
    await until(async () => (await agentEntries().last().locator(".text").textContent()) === FALLBACK_LINE, "the agent's fallback line");
    assert.equal(await page.getByText("The agent is thinking…").count(), 0);
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 5, reply: QUICK_REPLY });
    await accessible("playground (live call)");
    await screenshot("06-playground");

    await page.getByRole("button", { name: "End call" }).click();
    await page.locator("#call-status").getByText(/The call ended/).waitFor();
    // The origin's `end`, or the edge closing the relay as the call ends, whichever comes first.
    await page.locator(".transcript .entry.event").getByText(/^(Call ended \(requested\)|The relay closed \(1000: call ended\))$/).waitFor();
    await page.getByRole("button", { name: "Start another call" }).waitFor();
    const callId = (await page.locator("p.muted code").textContent()).trim();
    const ended = await json(await fetch(`${edge.url}/api/v1/calls/${callId}`, { headers: { authorization: `Bearer ${API_KEY}` } }));
    assert.equal(ended.status, "ended");
    assert.equal(ended.end_reason, "requested");
    await screenshot("07-playground-ended");

    // Leaving the playground mid-call ends that call (its concurrent-call lease comes back).
    await page.getByRole("button", { name: "Start another call" }).click();
    await until(async () => (await agentEntries().first().locator(".text").textContent()) === "Hello, you reached the front desk.", "the second call's greeting");
    const second = (await page.locator("p.muted code").textContent()).trim();
    assert.notEqual(second, callId);
    await page.getByRole("navigation").getByRole("link", { name: "Agents" }).click();
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    await until(
      async () => (await json(await fetch(`${edge.url}/api/v1/calls/${second}`, { headers: { authorization: `Bearer ${API_KEY}` } }))).status === "ended",
      "the call left behind ends",
    );
  });

  test("calls: the list updates live, a transcript shows each turn's timings with a latency chart, usage per day is charted", async () => {
    const authorization = { authorization: `Bearer ${API_KEY}` };
    const apiJson = async (method, route, body) => {
      const response = await fetch(`${edge.url}${route}`, { method, headers: { ...authorization, "content-type": "application/json" }, body: body && JSON.stringify(body) });
      assert.ok(response.ok, `${method} ${route}: ${response.status}`);
      return response.status === 204 ? null : response.json();
    };
    // The playground's first call: the one with the most caller turns.
    const listed = (await apiJson("GET", "/api/v1/calls?limit=100")).calls;
    const talked = listed.reduce((best, call) => (call.turn_count > best.turn_count ? call : best));
    assert.ok(talked.turn_count >= 4, JSON.stringify(listed));

    await page.getByRole("navigation").getByRole("link", { name: "Calls" }).click();
    await page.getByRole("heading", { name: "Calls", exact: true }).waitFor();
    await page.locator("#live-status").getByText("Live: new calls, turns and ends appear as they happen.").waitFor();
    for (const call of listed) await page.locator(`tr[data-call="${call.id}"]`).waitFor();
    const row = (id) => page.locator(`tr[data-call="${id}"]`);
    assert.equal(await row(talked.id).locator("td").nth(6).textContent(), String(talked.turn_count), "caller turns");

    // A call starts elsewhere (an API client): it appears without a reload, live, then ended.
    const started = await apiJson("POST", "/api/v1/calls", { agent_id: AGENT_ID });
    await row(started.call_id).getByText("live", { exact: true }).waitFor();
    assert.equal(await page.locator("tbody tr").first().getAttribute("data-call"), started.call_id, "newest first");
    await accessible("calls (live)");
    await screenshot("09-calls-live");
    await apiJson("POST", `/api/v1/calls/${started.call_id}/end`);
    await row(started.call_id).getByText("ended (requested)").waitFor();
    // Filters go to the API: only ended calls.
    await page.getByLabel("Status").selectOption("ended");
    await until(async () => (await page.locator("tbody tr").count()) === listed.length + 1 && (await page.locator("tbody .badge.live").count()) === 0, "only ended calls");
    await page.getByLabel("Status").selectOption("");

    // The talked-to call's transcript: every turn with what was recorded, and the chart.
    await page.getByRole("link", { name: `Transcript of ${talked.id}` }).click();
    await page.getByRole("heading", { name: `Call ${talked.id}` }).waitFor();
    const turns = (await apiJson("GET", `/api/v1/calls/${talked.id}/turns`)).turns;
    const entries = page.locator(".transcript li.entry");
    await until(async () => (await entries.count()) === turns.length, "every stored turn is shown");
    const reply = turns.find((turn) => turn.role === "assistant" && turn.model && !turn.interrupted);
    const shown = page.locator(`li.entry[data-seq="${reply.seq}"]`);
    assert.equal(await shown.locator(".text").textContent(), QUICK_REPLY);
    await shown.getByText(`first token ${reply.ttft_ms} ms`).waitFor();
    await shown.getByText(MODEL, { exact: true }).waitFor();
    await shown.getByText(/^whole reply /).waitFor();
    const cut = turns.find((turn) => turn.interrupted);
    await page.locator(`li.entry[data-seq="${cut.seq}"]`).getByText("interrupted", { exact: true }).waitFor();
    const failed = turns.find((turn) => turn.failure_reason);
    if (failed) await page.locator(`li.entry[data-seq="${failed.seq}"]`).getByText(`model failed (${failed.failure_reason}): fallback line said`).waitFor();
    await page.locator('li.entry.dtmf').getByText("5", { exact: true }).waitFor();

    const timed = turns.filter((turn) => turn.role === "assistant" && typeof turn.ttft_ms === "number");
    const chart = page.locator("figure.latency");
    assert.equal(await chart.getAttribute("data-points"), String(timed.length));
    const drawn = async (figure) =>
      figure.evaluate((element) => {
        const canvas = element.querySelector(".uplot canvas");
        if (!canvas || !canvas.width || !canvas.height) return 0;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked += 1;
        return inked;
      });
    await until(async () => (await drawn(chart)) > 500, "the latency chart is drawn on its canvas");
    assert.deepEqual(await chart.locator(".u-legend .u-label").allTextContents(), ["First token (ms)", "Whole reply (ms)"]);
    assert.match(await chart.locator("[role=img]").getAttribute("aria-label"), new RegExp(`^Latency of ${timed.length} replies`));
    await accessible("transcript");
    await screenshot("10-transcript");

    // A live call's transcript grows as it is spoken: its event stream drives the page.
    const liveCall = await apiJson("POST", "/api/v1/calls", { agent_id: AGENT_ID });
    await page.goto(`${edge.url}/console/#/calls/${liveCall.call_id}`);
    await page.getByRole("heading", { name: `Call ${liveCall.call_id}` }).waitFor();
    await page.getByText("No reply has been timed yet.").waitFor();
    await page.getByText("following its events").waitFor();
    const turn = await fetch(`${edge.url}/api/v1/calls/${liveCall.call_id}/turns`, { method: "POST", headers: { ...authorization, "content-type": "application/json" }, body: JSON.stringify({ text: "Are you open on Sunday?" }) });
    assert.equal(turn.status, 200);
    await turn.text();
    await page.locator(".transcript li.entry.agent .text").getByText(QUICK_REPLY).waitFor();
    await until(async () => (await page.locator("figure.latency").getAttribute("data-points")) === "1", "the chart gains the new reply");
    await until(async () => (await drawn(page.locator("figure.latency"))) > 500, "and draws it");
    await apiJson("POST", `/api/v1/calls/${liveCall.call_id}/end`);
    await page.locator(".facts").getByText("ended (requested)").waitFor();

    // Usage per day: today's figures, charted and tabled.
    await page.getByRole("navigation").getByRole("link", { name: "Usage" }).click();
    await page.getByRole("heading", { name: "Usage" }).waitFor();
    const today = new Date().toISOString().slice(0, 10);
    const usage = await apiJson("GET", "/api/v1/usage");
    const figures = usage.days.find((day) => day.day === today);
    const todayRow = page.locator("table.usage-table tbody tr").filter({ has: page.getByRole("rowheader", { name: today }) });
    await todayRow.waitFor();
    assert.deepEqual(
      (await todayRow.locator("td").allTextContents()).map((text) => Number(text.replaceAll(",", ""))),
      [figures.calls, figures.minutes, figures.turns, figures.input_tokens, figures.output_tokens, figures.tool_calls],
    );
    assert.ok(figures.calls >= listed.length + 2 && figures.minutes >= 1, JSON.stringify(figures));
    const usageChart = page.locator("figure.usage");
    assert.equal(await usageChart.getAttribute("data-points"), "30", "every day of the range, quiet ones as zero");
    await until(async () => (await drawn(usageChart)) > 500, "the usage chart is drawn on its canvas");
    assert.deepEqual(await usageChart.locator(".u-legend .u-label").allTextContents(), ["Calls", "Minutes"]);
    await accessible("usage");
    await screenshot("11-usage");

    await page.getByRole("navigation").getByRole("link", { name: "Agents" }).click();
    await page.getByRole("heading", { name: "Agents" }).waitFor();
  });

  test("sign out clears the credential; a JWT signs in to the same tenant; no CSP violation or page error on the way", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByText("The credential was removed from this tab").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await accessible("signed out");
    await screenshot("08-signed-out");

    await page.getByLabel("API key or JWT").fill(jwt({ sub: "operator", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" }));
    await page.getByRole("button", { name: "Sign in" }).click();
    // Back on the page the URL names, as the JWT's subject and tenant: the same tenant's agents.
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    await page.getByText(`operator, tenant ${TENANT}`).waitFor();
    await page.getByRole("cell", { name: "Front desk" }).waitFor();

    // Delete, confirmed inline.
    await page.getByRole("button", { name: `Delete ${AGENT_ID}` }).click();
    await page.getByRole("button", { name: `Delete ${AGENT_ID}` }).click();
    await page.getByText(`Agent ${AGENT_ID} deleted.`).waitFor();
    await page.getByText("No agents yet").waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();

    assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], "CSP violations");
    // Chromium logs every 4xx answer as a failed resource (the refused key, the id check's 404,
    // the validation error's 400): expected here; nothing else may be an error.
    assert.deepEqual(
      violations.filter((text) => !/the server responded with a status of 4\d\d/.test(text)),
      [],
      "console errors",
    );
  });

  test("keyboard only: skip link, navigation and the form are reachable with Tab", async () => {
    await page.getByLabel("API key or JWT").fill(API_KEY);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    // A fresh load (the credential stays in the tab's session storage) starts Tab at the top.
    await page.reload();
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
    const reached = [];
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press("Tab");
      reached.push(await page.evaluate(() => document.activeElement?.textContent?.trim()));
    }
    for (const name of ["Agents", "Playground", "Sign out", "New agent"]) assert.ok(reached.includes(name), `${name} reachable by Tab: ${reached}`);
    await withTimeout(page.getByRole("button", { name: "Sign out" }).click(), 5000, "sign out");
  });
});
