// Where a Worker's CPU goes: V8's sampling CPU profiler over workerd's inspector (`workerd serve
// --inspector-addr`), started around a piece of load and folded into self time per function.
// The benchmarks run it when PROFILE=1 (the release bundles keep the wasm's name section, so Rust
// functions appear by name); PROFILE_TOP sets how many functions are listed (25).

import { createRequire } from "node:module";
import path from "node:path";
import { root } from "./workerd.mjs";

const WebSocket = createRequire(path.join(root, "wrangler/package.json"))("ws");

/** Whether this run profiles (PROFILE=1). */
export const PROFILING = process.env.PROFILE === "1";

/**
 * Profiles the isolate of `service` in the workerd whose inspector listens on `port` while
 * `load()` runs; returns `{ top, kinds }`: the `top` functions by self time and the time per kind of code,
 * each row `{ name, selfMs, share }`.
 */
export async function profileService({ port, service, load, top = Number(process.env.PROFILE_TOP ?? 25), intervalUs = 100 }) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const target = targets.find((t) => t.id === service);
  if (!target) throw new Error(`no inspector target ${service}: ${targets.map((t) => t.id).join(", ")}`);
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  let next = 1;
  const pending = new Map();
  socket.on("message", (data) => {
    const message = JSON.parse(data.toString());
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${message.error.message}`));
    else waiter.resolve(message.result);
  });
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ id, method, params }));
    });
  try {
    await call("Profiler.enable");
    await call("Profiler.setSamplingInterval", { interval: intervalUs });
    await call("Profiler.start");
    await load();
    const { profile } = await call("Profiler.stop");
    return fold(profile, top);
  } finally {
    socket.close();
  }
}

/**
 * What kind of code a frame is, so a profile also says how the CPU splits between the Worker's
 * own code (Rust compiled to wasm, or the JS Worker's source), the glue between wasm and JS that
 * wasm-bindgen and worker-build generate (index.js), crossings between wasm and JS, the runtime's
 * own APIs (fetch, Request, SQL, WebSocket send: native, no source), and V8 itself.
 */
function kindOf(frame) {
  const name = frame.functionName ?? "";
  if (name === "(idle)") return "idle";
  if (name === "(program)" || name === "(garbage collector)") return "V8 (program, GC)";
  if (name.startsWith("js-to-wasm") || name.startsWith("wasm-to-js")) return "wasm <-> JS crossings";
  const file = frame.url ? path.basename(frame.url) : "";
  if (file.includes(".wasm")) return "the Worker's code (wasm)";
  if (file === "index.js") return "wasm-bindgen / worker-build glue (index.js)";
  if (file) return "the Worker's code (JS)";
  return "runtime APIs (native)";
}

/** Self time per function name (and file), largest first; and per kind of code. */
function fold(profile, top) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map();
  const kinds = new Map();
  let total = 0;
  profile.samples.forEach((id, index) => {
    const delta = profile.timeDeltas[index] ?? 0;
    const frame = byId.get(id)?.callFrame ?? {};
    const file = frame.url ? path.basename(frame.url) : "";
    const js = frame.url?.endsWith(".js") ? `:${frame.lineNumber + 1}:${frame.columnNumber + 1}` : "";
    const name = `${frame.functionName || "(anonymous)"}${file ? ` [${file}${js}]` : ""}`;
    self.set(name, (self.get(name) ?? 0) + delta);
    const kind = kindOf(frame);
    kinds.set(kind, (kinds.get(kind) ?? 0) + delta);
    total += delta;
  });
  const rows = (map, count) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(([name, us]) => ({ name, selfMs: us / 1000, share: total ? us / total : 0 }));
  return { top: rows(self, top), kinds: rows(kinds, kinds.size) };
}

/** Prints a profile's split by kind of code and its top functions under a title. */
export function printProfile(title, { top, kinds }) {
  const line = (row) => console.log(`  ${(row.share * 100).toFixed(1).padStart(5)}%  ${row.selfMs.toFixed(1).padStart(8)} ms  ${row.name}`);
  console.log(`\nprofile: ${title}\n by kind of code:`);
  kinds.forEach(line);
  console.log(" top functions by self time:");
  top.forEach(line);
}
