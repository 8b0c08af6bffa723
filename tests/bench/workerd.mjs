// What every workerd benchmark shares: the workerd binary, the release bundles as capnp module
// lists, an in-memory KV service speaking workerd's KV binding protocol, starting and stopping
// `workerd serve`, a keep-alive HTTP client, and the CPU time of a process.
//
// Raw `workerd serve` with a capnp config, not `wrangler dev` or miniflare: their proxies cap
// throughput near 800 req/s (TOOLCHAIN.md). One workerd process runs all its isolates on one
// thread, so a process's CPU time is exactly what its Workers (and the runtime serving them) cost.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The workerd binary pinned by wrangler/package-lock.json. */
export const WORKERD = createRequire(path.join(root, "wrangler/package.json"))("workerd").default;

/** An environment variable the benchmark command sets. */
export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run through tests/stack/bench.sh`);
  return value;
}

/** A capnp text literal. */
export const capnp = (text) => JSON.stringify(text);

/** The compatibility date of `wrangler/<worker>.toml`, so workerd runs the Worker as deployed. */
export function compatibilityDate(worker) {
  const toml = readFileSync(path.join(root, "wrangler", `${worker}.toml`), "utf8");
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1];
  if (!date) throw new Error(`no compatibility_date in wrangler/${worker}.toml`);
  return date;
}

/** The release `wrangler deploy --dry-run` bundle of a Worker (WORKER_BUNDLES_DIR/<worker>). */
export const bundleDir = (worker) => path.join(required("WORKER_BUNDLES_DIR"), worker);

/**
 * Copies a bundle's modules into `dir/<sub>` and returns their capnp module list (the main
 * module, index.js, first, as workerd requires; the wasm under the name index.js imports it by).
 */
export function bundleModules(bundle, dir, sub) {
  mkdirSync(path.join(dir, sub), { recursive: true });
  const files = readdirSync(bundle)
    .filter((file) => file.endsWith(".js") || file.endsWith(".wasm"))
    .sort((a, b) => Number(b === "index.js") - Number(a === "index.js") || a.localeCompare(b));
  if (files[0] !== "index.js") throw new Error(`no index.js in ${bundle}`);
  return files
    .map((file) => {
      copyFileSync(path.join(bundle, file), path.join(dir, sub, file));
      const kind = file.endsWith(".wasm") ? "wasm" : "esModule";
      return `(name = ${capnp(file)}, ${kind} = embed ${capnp(`${sub}/${file}`)})`;
    })
    .join(",\n        ");
}

/** gzip -9 size of the bundle's wasm, in KB (1,024 bytes). */
export function wasmGzipKb(bundle) {
  const wasm = readdirSync(bundle).find((file) => file.endsWith(".wasm"));
  if (!wasm) throw new Error(`no wasm in ${bundle}`);
  return gzipSync(readFileSync(path.join(bundle, wasm)), { level: 9 }).length / 1024;
}

/**
 * A Worker module serving workerd's KV binding protocol from memory (`GET`/`PUT`/`DELETE
 * /<key>`, the key percent-encoded when `?urlencoded=true`), seeded with `entries` ([key,
 * value] pairs). Cloudflare's KV is not this: a read here is one local subrequest.
 */
export function kvSource(entries = []) {
  return `const store = new Map(${JSON.stringify(entries)});
export default {
  async fetch(request) {
    const url = new URL(request.url);
    let key = url.pathname.slice(1);
    if (url.searchParams.get("urlencoded") === "true") key = decodeURIComponent(key);
    if (request.method === "GET") {
      const value = store.get(key);
      return value === undefined ? new Response("Not Found", { status: 404 }) : new Response(value);
    }
    if (request.method === "PUT") { store.set(key, await request.text()); return new Response(null); }
    if (request.method === "DELETE") { store.delete(key); return new Response(null); }
    return new Response("unsupported", { status: 405 });
  },
};
`;
}

/** A free TCP port on loopback (the kernel's choice, released just before use). */
export async function freePort() {
  const server = net.createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/**
 * Starts `workerd serve` on the config `write(dir)` puts in a fresh folder (it returns the
 * config's path, relative paths inside it resolve against `dir`), and waits until `ready()`
 * resolves true; with `inspectorPort`, V8's inspector listens there (profile.mjs). `stop()` ends
 * the process and removes the folder.
 */
export async function startWorkerd({ name = "workerd", write, ready, timeoutMs = 20_000, inspectorPort }) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  const config = write(dir);
  const args = ["serve", config, ...(inspectorPort ? [`--inspector-addr=127.0.0.1:${inspectorPort}`] : [])];
  const child = spawn(WORKERD, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const stderr = [];
  child.stderr.on("data", (chunk) => stderr.push(chunk.toString()));
  const handle = {
    dir,
    pid: child.pid,
    stderr: () => stderr.join(""),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) {
      await handle.stop();
      throw new Error(`${name}: workerd exited with ${child.exitCode}: ${handle.stderr()}`);
    }
    if (await ready().catch(() => false)) return handle;
    if (Date.now() > deadline) {
      await handle.stop();
      throw new Error(`${name}: workerd was not ready within ${timeoutMs} ms: ${handle.stderr()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Keep-alive HTTP/1.1 client for one loopback port. */
export class Client {
  constructor(port, maxSockets = 64) {
    this.port = port;
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  /** Resolves `{ status, text, headers }`. `body` is a string or Buffer. */
  request(method, pathname, { body, headers = {} } = {}) {
    return new Promise((resolve, reject) => {
      const all = body === undefined ? headers : { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers };
      const req = http.request({ host: "127.0.0.1", port: this.port, path: pathname, method, agent: this.agent, headers: all }, (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString(), headers: res.headers }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  close() {
    this.agent.destroy();
  }
}

/** CPU time of every thread of a process, in nanoseconds (Linux: /proc/<pid>/task/*\/schedstat). */
export function cpuNs(pid) {
  let total = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return total;
}
