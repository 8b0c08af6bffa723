// A carrier REST emulator for the end-to-end tests: Twilio's `Calls.json` and Telnyx's TeXML
// `Calls`, on a free loopback port, beside the Bedrock emulator. It checks each request as the
// carrier would (path, authentication, content type, required fields, E.164 numbers, the caller
// id among the account's numbers, the documented answering-machine-detection parameters) and
// answers as the carrier documents it. Then the test drives the call through it: the emulator
// posts the status callbacks (ringing, answered, the AMD result, completed, busy, no-answer)
// signed as the carrier signs them, opens the ConversationRelay WebSocket from the URL in the
// call's TwiML/TeXML (Twilio: `X-Twilio-Signature` over the URL; Telnyx: the URL as given) and
// sends `setup` with the `<Parameter>`s as `customParameters`. It can also make an incoming call
// (webhook → markup → relay) for either carrier.
//
// Node rather than Rust, as test infrastructure: it runs inside the test process, so a test
// drives each call step by step (ring, answer, speak, detect, hang up) without a control
// protocol; Node signs with HMAC-SHA1 and Ed25519 out of the box; and the relay client is the
// end-to-end harness's own (`ws`, pinned through wrangler's lockfile).
//
// Sources for the shapes: Twilio — https://www.twilio.com/docs/voice/api/call-resource,
// https://www.twilio.com/docs/voice/answering-machine-detection,
// https://www.twilio.com/docs/usage/security (signatures),
// https://www.twilio.com/docs/voice/conversationrelay/websocket-messages (setup). Telnyx —
// https://developers.telnyx.com/api-reference/texml-rest-commands/initiate-an-outbound-call,
// https://developers.telnyx.com/api-reference/callbacks/texml-call-answered (and -ringing,
// -completed, -amd), https://developers.telnyx.com/api-reference/websockets/conversationrelay-websocket-channel.

import { createHmac, generateKeyPairSync, randomBytes, randomUUID, sign as edSign } from "node:crypto";
import http from "node:http";
import { once } from "node:events";
import { relaySocket, withTimeout } from "../e2e/harness.mjs";

const E164 = /^\+[1-9][0-9]{6,14}$/;
const AMD_MODES = ["Enable", "DetectMessageEnd"];
const STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"];

/** A Telnyx account's Ed25519 key pair: the public key as Mission Control shows it (base64). */
export function telnyxKeyPair() {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  return { privateKey, publicKey: raw.toString("base64") };
}

/** Twilio's signature: base64 HMAC-SHA1 of the URL and the sorted parameters. */
export function twilioSignature(token, url, params = {}) {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, key) => acc + key + params[key], url);
  return createHmac("sha1", token).update(data).digest("base64");
}

/** Telnyx's signature headers of `body`: Ed25519 over `timestamp|body`. */
export function telnyxHeaders(privateKey, body, timestamp = Math.floor(Date.now() / 1000)) {
  return {
    "telnyx-timestamp": String(timestamp),
    "telnyx-signature-ed25519": edSign(null, Buffer.from(`${timestamp}|${body}`), privateKey).toString("base64"),
  };
}

const unescapeXml = (text) =>
  text.replaceAll("&quot;", '"').replaceAll("&apos;", "'").replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");

/** The relay URL, the `<Parameter>`s and the attributes of a `<ConversationRelay>` document. */
export function readAnswer(xml) {
  const element = xml.match(/<ConversationRelay([^>]*?)\/?>/);
  if (!element) return null;
  const attributes = Object.fromEntries([...element[1].matchAll(/ ([A-Za-z]+)="([^"]*)"/g)].map((m) => [m[1], unescapeXml(m[2])]));
  const parameters = Object.fromEntries([...xml.matchAll(/<Parameter name="([^"]*)" value="([^"]*)"\/>/g)].map((m) => [unescapeXml(m[1]), unescapeXml(m[2])]));
  return { url: attributes.url, attributes, parameters };
}

/**
 * Starts the emulator. `twilio.accounts`: `{ AccountSid: { token, numbers } }`; `telnyx.accounts`:
 * `{ accountId: { apiKey, applicationSid, privateKey, numbers } }`. `numbers` are the caller ids
 * the account may use (a Twilio number or verified caller id; a Telnyx number).
 */
export async function startCarrierEmulator({ twilio = { accounts: {} }, telnyx = { accounts: {} } } = {}) {
  const calls = [];
  const waiters = [];
  const requests = [];
  let refusals = [];

  const server = http.createServer(async (request, response) => {
    let body = "";
    for await (const chunk of request) body += chunk;
    const answer = (status, payload) => {
      response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(payload));
    };
    const url = new URL(request.url, "http://emulator");
    requests.push({ method: request.method, path: url.pathname, headers: request.headers, body });
    const refusal = refusals.shift();
    try {
      const twilioPath = url.pathname.match(/^\/2010-04-01\/Accounts\/([^/]+)\/Calls\.json$/);
      const telnyxPath = url.pathname.match(/^\/v2\/texml\/Accounts\/([^/]+)\/Calls$/);
      if (request.method === "POST" && twilioPath) return twilioCreate(twilioPath[1], request, body, answer, refusal);
      if (request.method === "POST" && telnyxPath) return telnyxCreate(telnyxPath[1], request, body, answer, refusal);
      answer(404, { message: "no such resource" });
    } catch (error) {
      answer(500, { message: String(error) });
    }
  });

  /** Twilio: HTTP Basic with the AccountSid and its auth token, form parameters. */
  function twilioCreate(sid, request, body, answer, refusal) {
    const account = twilio.accounts[sid];
    const expected = account && `Basic ${Buffer.from(`${sid}:${account.token}`).toString("base64")}`;
    if (!account || request.headers.authorization !== expected) {
      return answer(401, { code: 20003, message: "Authenticate", more_info: "https://www.twilio.com/docs/errors/20003", status: 401 });
    }
    if (!request.headers["content-type"]?.startsWith("application/x-www-form-urlencoded")) {
      return answer(400, { code: 20001, message: "form parameters expected", status: 400 });
    }
    const form = new URLSearchParams(body);
    const params = Object.fromEntries(form);
    params.StatusCallbackEvent = form.getAll("StatusCallbackEvent");
    const problem = check(params, {
      required: ["To", "From", "Twiml", "StatusCallback"],
      events: params.StatusCallbackEvent,
    });
    if (problem) return answer(400, { code: 20001, message: problem, status: 400 });
    if (refusal) return answer(refusal.status, refusal.twilio ?? refusal.body);
    if (!E164.test(params.To)) return answer(400, twilioError(21211, `The 'To' number ${params.To} is not a valid phone number.`));
    if (!account.numbers.includes(params.From)) {
      return answer(400, twilioError(21210, `The source phone number provided, ${params.From}, is not yet verified for your account.`));
    }
    const callSid = "CA" + randomBytes(16).toString("hex");
    record({ carrier: "twilio", account: sid, accountSecret: account.token, callSid, params, markup: params.Twiml });
    answer(201, { sid: callSid, account_sid: sid, to: params.To, from: params.From, status: "queued", direction: "outbound-api" });
  }

  /** Telnyx: Bearer API key, JSON body, `ApplicationSid` of the account's TeXML application. */
  function telnyxCreate(id, request, body, answer, refusal) {
    const account = telnyx.accounts[id];
    if (!account || request.headers.authorization !== `Bearer ${account.apiKey}`) {
      return answer(401, { errors: [{ code: "10009", title: "Authentication failed", detail: "The API key is invalid." }] });
    }
    if (!request.headers["content-type"]?.startsWith("application/json")) {
      return answer(415, { errors: [{ code: "10015", title: "Unsupported media type" }] });
    }
    const params = JSON.parse(body);
    const problem =
      check(params, {
        required: ["ApplicationSid", "To", "From", "Texml", "StatusCallback"],
        events: String(params.StatusCallbackEvent ?? "").split(" ").filter(Boolean),
      }) ?? (params.ApplicationSid !== account.applicationSid ? "ApplicationSid is not the account's TeXML application" : null);
    if (problem) return answer(422, telnyxError(problem, "/ApplicationSid"));
    if (refusal) return answer(refusal.status, refusal.telnyx ?? refusal.body);
    if (!E164.test(params.To)) return answer(422, telnyxError(`${params.To} is not a valid phone number.`, "/To"));
    if (!account.numbers.includes(params.From)) return answer(422, telnyxError(`${params.From} is not a number of the account.`, "/From"));
    const callSid = "v3:" + randomBytes(40).toString("base64url").slice(0, 54);
    record({ carrier: "telnyx", account: id, accountSecret: account.privateKey, callSid, params, markup: params.Texml });
    // The documented answer names no call id: it arrives with the first callback.
    answer(200, { from: params.From, to: params.To, status: "queued" });
  }

  /** What both carriers check alike; a sentence, or null. */
  function check(params, { required, events }) {
    const missing = required.filter((name) => !params[name]);
    if (missing.length) return `missing ${missing.join(", ")}`;
    if (!events.length || events.some((event) => !STATUS_EVENTS.includes(event))) return `StatusCallbackEvent ${events} is not of ${STATUS_EVENTS}`;
    for (const needed of ["ringing", "answered", "completed"]) if (!events.includes(needed)) return `StatusCallbackEvent lacks ${needed}`;
    if (params.MachineDetection !== undefined) {
      if (!AMD_MODES.includes(params.MachineDetection)) return `MachineDetection ${params.MachineDetection} is not Enable or DetectMessageEnd`;
      if (String(params.AsyncAmd) === "true" && !params.AsyncAmdStatusCallback) return "AsyncAmd needs AsyncAmdStatusCallback";
    }
    if (!readAnswer(params.Twiml ?? params.Texml)?.url?.startsWith("ws")) return "the markup connects no ConversationRelay";
    return null;
  }

  function record(fields) {
    const call = emulatedCall({ ...fields, to: fields.params.To, from: fields.params.From, statusUrl: fields.params.StatusCallback });
    const waiter = waiters.shift();
    if (waiter) waiter(call);
    else calls.push(call);
  }

  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    /** Every request the REST API received. */
    requests,
    /** The next call placed through the REST API (waits for it). */
    nextCall: (ms = 10_000) =>
      withTimeout(calls.length ? Promise.resolve(calls.shift()) : new Promise((resolve) => waiters.push(resolve)), ms, "no call was placed"),
    /** The next REST request is refused with `status` and the carrier's error body. */
    refuseNext: (refusal) => refusals.push(refusal),
    /** An incoming call: the webhook to `edgeUrl`, then the call as for an outbound one. */
    incoming: (options) => incomingCall({ twilio, telnyx, ...options }),
    close: async () => {
      refusals = [];
      server.close();
      await once(server, "close");
    },
  };
}

const twilioError = (code, message) => ({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status: 400 });
const telnyxError = (detail, pointer) => ({ errors: [{ code: "10015", title: "Invalid value", detail, source: { pointer } }] });

/**
 * One call as the carrier runs it. `post(params)` posts a callback to the status URL signed as
 * the carrier signs it; `answer()` opens the relay and sends `setup`.
 */
function emulatedCall({ carrier, account, accountSecret, callSid, to, from, statusUrl, markup, params = {}, direction = "outbound" }) {
  const relay = readAnswer(markup);
  const base = carrier === "twilio" ? { AccountSid: account, CallSid: callSid, From: from, To: to } : { AccountSid: account, CallSid: callSid, CallSidLegacy: callSid, ConnectionId: "1234567890", From: from, To: to };
  let sequence = 0;
  const call = {
    carrier,
    callSid,
    to,
    from,
    params,
    markup,
    relay,
    socket: null,
    /** Posts a callback; the edge's answer. */
    async post(fields) {
      const payload = { ...base, ...fields };
      if (carrier === "telnyx") {
        payload.CallbackSource = "call-progress-events";
        payload.SequenceNumber = String(sequence++);
      }
      const body = new URLSearchParams(payload).toString();
      const headers =
        carrier === "twilio"
          ? { "x-twilio-signature": twilioSignature(accountSecret, statusUrl, payload) }
          : telnyxHeaders(accountSecret, body);
      return fetch(statusUrl, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, body });
    },
    ring: () => call.post({ CallStatus: "ringing" }),
    /** The callee picks up: `in-progress`, then the relay with `setup`. */
    async answer() {
      const answered = await call.post({ CallStatus: "in-progress" });
      if (answered.status !== 204) throw new Error(`the edge answered ${answered.status} to in-progress: ${await answered.text()}`);
      call.socket = await call.connect();
      return call.socket;
    },
    /** Opens the relay WebSocket and sends `setup`. */
    async connect() {
      const headers = carrier === "twilio" ? { "x-twilio-signature": twilioSignature(accountSecret, relay.url) } : {};
      const socket = await relaySocket(relay.url, headers);
      const setup =
        carrier === "twilio"
          ? { type: "setup", sessionId: `VX${callSid.slice(2)}`, accountSid: account, parentCallSid: "", callSid, from, to, direction: direction === "outbound" ? "outbound-api" : "inbound", callStatus: "IN-PROGRESS", customParameters: relay.parameters }
          : { type: "setup", sessionId: randomUUID(), accountSid: account, callSid, callControlId: callSid, callSessionId: randomUUID(), callLegId: randomUUID(), from, to, direction, callerName: "", callStatus: "active", customParameters: relay.parameters };
      socket.send(setup);
      return socket;
    },
    /** Answering-machine detection's result (the AMD callback). */
    detect: (answeredBy) => call.post({ AnsweredBy: answeredBy, MachineDetectionDuration: "2400" }),
    /** A final status: `completed`, `busy`, `no-answer`, `failed`, `canceled`. */
    end: (status = "completed") => call.post({ CallStatus: status, ...(status === "completed" ? { CallDuration: "12" } : {}) }),
  };
  return call;
}

/** An incoming call: posts the carrier's webhook to `edgeUrl` and reads the markup. */
async function incomingCall({ twilio, telnyx, carrier, account, edgeUrl, from, to, cf }) {
  const callSid = carrier === "twilio" ? "CA" + randomBytes(16).toString("hex") : "v3:" + randomBytes(40).toString("base64url").slice(0, 54);
  const secret = carrier === "twilio" ? twilio.accounts[account].token : telnyx.accounts[account].privateKey;
  const url = `${edgeUrl}/voice/${carrier}/incoming`;
  const params = { AccountSid: account, CallSid: callSid, From: from, To: to, CallStatus: "ringing", Direction: "inbound" };
  const body = new URLSearchParams(params).toString();
  const headers = carrier === "twilio" ? { "x-twilio-signature": twilioSignature(secret, url, params) } : telnyxHeaders(secret, body);
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...(cf ? { "mf-cf-blob": cf } : {}), ...headers },
    body,
  });
  const markup = await response.text();
  const call = emulatedCall({ carrier, account, accountSecret: secret, callSid, to, from, statusUrl: `${edgeUrl}/voice/${carrier}/status`, markup, direction: "inbound" });
  call.response = response;
  return call;
}
