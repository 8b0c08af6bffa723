// The plain-JavaScript baseline of a hot-key check (tests/bench/rate-limiter.bench.mjs): the
// least a Worker plus a SQLite-backed Durable Object can do for one GCRA decision in workerd,
// written in plain JS. POST /check with `{"checks":[{"key": …}]}`: the Worker parses the body,
// sends the key's object one JSON operation, and answers its decision as JSON; the object keeps
// its GCRA state in memory and writes it to one SQLite row on every admission (as the Rust
// object does). No policies, no keyed hash, no refusal memory, no deadline: a floor, not an
// equivalent. Binding: LIMITER (Durable Object namespace of JsLimiter). GCRA: 500/s, burst 100.

const INTERVAL_MS = 2;
const BURST = 100;

export class JsLimiter {
  constructor(state) {
    this.sql = state.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS limiter (id INTEGER PRIMARY KEY, tat REAL NOT NULL)");
    this.tat = this.sql.exec("SELECT tat FROM limiter WHERE id = 1").toArray()[0]?.tat ?? 0;
  }

  async fetch(request) {
    const { cost } = await request.json();
    const now = Date.now();
    const tat = Math.max(this.tat, now);
    const next = tat + cost * INTERVAL_MS;
    const allowed = next - now <= BURST * INTERVAL_MS;
    if (allowed) {
      this.tat = next;
      this.sql.exec("INSERT INTO limiter (id, tat) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET tat = excluded.tat", next);
    }
    const retry = allowed ? 0 : next - now - BURST * INTERVAL_MS;
    return Response.json({ allowed, retry_after_ms: retry });
  }
}

export default {
  async fetch(request, env) {
    if (request.method !== "POST" || new URL(request.url).pathname !== "/check") {
      return new Response("not found", { status: 404 });
    }
    const { checks } = await request.json();
    const stub = env.LIMITER.get(env.LIMITER.idFromName(checks[0].key));
    const answer = await stub.fetch("https://limiter.object/apply", {
      method: "POST",
      body: JSON.stringify({ cost: checks[0].cost ?? 1 }),
    });
    const decision = await answer.json();
    return Response.json({ allowed: decision.allowed, decisions: [decision] });
  },
};
