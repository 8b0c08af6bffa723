// Calls: the live list (the list API for what is, the tenant's event stream for "something
// changed": each event refreshes the page a moment later) and one call's transcript with each
// turn's timings, model and interruptions and a latency chart across its replies (refreshed by
// the call's own event stream while it is live).

import { useEffect, useRef, useState } from "preact/hooks";
import type uPlot from "uplot";
import { Api, ApiError, type Call, type CallPage, callPath, type CallView, type Turn, type TurnList } from "./api";
import { ErrorNote } from "./agents";
import { callLength, count, duration, latencySeries, speaker } from "./format";
import { follow, type LiveState } from "./live";
import { href } from "./route";

/** Calls per page. */
const PAGE = 25;
/** The list API's largest page. */
const MAX_PAGE = 100;
/** Events within this window refresh the list once. */
const REFRESH_AFTER_MS = 500;

const when = (ms: number) => new Date(ms).toLocaleString();
const asApiError = (caught: unknown) => (caught instanceof ApiError ? caught : new ApiError(0, "internal", String(caught)));

/** Calls `action` once, `delayMs` after the first of a burst of `poke`s. */
function useCoalesced(action: () => void, delayMs: number): () => void {
  const latest = useRef(action);
  latest.current = action;
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => () => clearTimeout(timer.current ?? undefined), []);
  return () => {
    timer.current ??= setTimeout(() => {
      timer.current = null;
      latest.current();
    }, delayMs);
  };
}

/** A clock that ticks each second while `running` (live calls' lengths grow). */
function useNow(running: boolean): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    if (!running) return;
    const tick = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(tick);
  }, [running]);
  return now;
}

/** A labelled select of `options` ([value, text]). */
export function Choice({ id, label, value, options, onChange }: { id: string; label: string; value: string; options: [string, string][]; onChange: (value: string) => void }) {
  return (
    <div class="field inline">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(event) => onChange(event.currentTarget.value)}>
        {options.map(([optionValue, text]) => (
          <option key={optionValue} value={optionValue}>
            {text}
          </option>
        ))}
      </select>
    </div>
  );
}

const LIVE_TEXT: Record<LiveState, string> = {
  connecting: "Connecting to the live event stream…",
  live: "Live: new calls, turns and ends appear as they happen.",
  retrying: "The live event stream broke; reconnecting…",
  done: "Not live: the event stream closed.",
};

export function CallList({ api }: { api: Api }) {
  const [status, setStatus] = useState("");
  const [source, setSource] = useState("");
  const [calls, setCalls] = useState<Call[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [live, setLive] = useState<LiveState>("connecting");
  const shown = useRef(PAGE);
  const now = useNow(calls?.some((call) => call.status === "active") ?? false);

  const query = (limit: number, cursor?: string) => {
    const params = new URLSearchParams({ limit: String(limit) });
    if (status) params.set("status", status);
    if (source) params.set("source", source);
    if (cursor) params.set("cursor", cursor);
    return `/api/v1/calls?${params}`;
  };
  /** The pages shown so far, read again (what changed is in them). */
  const reload = async () => {
    try {
      const page = await api.call<CallPage>("GET", query(Math.min(MAX_PAGE, Math.max(PAGE, shown.current))));
      setCalls(page.calls);
      setNext(page.next_cursor ?? null);
      setError(null);
    } catch (caught) {
      setError(asApiError(caught));
      setCalls((current) => current ?? []);
    }
  };
  const more = async () => {
    if (!next) return;
    try {
      const page = await api.call<CallPage>("GET", query(PAGE, next));
      shown.current += page.calls.length;
      setCalls((current) => [...(current ?? []), ...page.calls]);
      setNext(page.next_cursor ?? null);
    } catch (caught) {
      setError(asApiError(caught));
    }
  };
  const refresh = useCoalesced(reload, REFRESH_AFTER_MS);

  useEffect(() => {
    shown.current = PAGE;
    reload();
  }, [api, status, source]);

  useEffect(() => {
    let broke = false;
    const stream = follow(api, "/api/v1/events", {
      onMessage: refresh,
      onState: (state) => {
        setLive(state);
        // Back after a break: what happened meanwhile is read from the list.
        if (state === "live" && broke) refresh();
        broke = state === "retrying";
      },
    });
    return () => stream.stop();
  }, [api]);

  return (
    <section>
      <h1>Calls</h1>
      <p class="muted" role="status" id="live-status">
        {LIVE_TEXT[live]}
      </p>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <Choice id="filter-status" label="Status" value={status} onChange={setStatus} options={[["", "any"], ["active", "live"], ["ended", "ended"]]} />
        <Choice id="filter-source" label="Source" value={source} onChange={setSource} options={[["", "any"], ["phone", "phone"], ["api", "API"]]} />
      </form>
      {error && <ErrorNote error={error} />}
      {calls === null ? (
        <p class="muted">Loading calls…</p>
      ) : calls.length === 0 ? (
        !error && <p>No calls{status || source ? " match these filters" : " yet"}. Start one in the playground, or call an agent's number.</p>
      ) : (
        <>
          <table class="calls">
            <caption class="visually-hidden">Calls of this tenant, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Call</th>
                <th scope="col">Agent</th>
                <th scope="col">Source</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
                <th scope="col">Length</th>
                <th scope="col">Caller turns</th>
                <th scope="col">Region</th>
              </tr>
            </thead>
            <tbody>
              {calls.map((call) => (
                <tr key={call.id} data-call={call.id}>
                  <td>
                    <a href={href.call(call.id)} aria-label={`Transcript of ${call.id}`}>
                      <code>{call.id}</code>
                    </a>
                  </td>
                  <td>{call.agent_id}</td>
                  <td>{call.source === "api" ? "API" : `phone${call.from ? ` ${call.from}` : ""}`}</td>
                  <td>{call.status === "active" ? <span class="badge live">live</span> : <span class="badge">ended{call.end_reason ? ` (${call.end_reason})` : ""}</span>}</td>
                  <td>{when(call.started_at_ms)}</td>
                  <td>{duration(callLength(call, now))}</td>
                  <td>{call.turn_count}</td>
                  <td>{call.region}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {next && (
            <p>
              <button type="button" class="secondary" onClick={more}>
                Older calls
              </button>
            </p>
          )}
        </>
      )}
    </section>
  );
}

type Charts = typeof import("./chart");
let charts: Promise<Charts> | null = null;
/** uPlot and the charts, fetched the first time a page shows one. */
export const loadCharts = () => (charts ??= import("./chart"));

/** A chart drawn by `draw` into its box once the chart code is loaded, drawn again when `points`
 * change. */
export function ChartBox({ label, points, draw }: { label: string; points: unknown; draw: (charts: Charts, box: HTMLElement) => uPlot }) {
  const box = useRef<HTMLDivElement>(null);
  const [failed, setFailed] = useState(false);
  const key = JSON.stringify(points);
  useEffect(() => {
    let chart: uPlot | null = null;
    let gone = false;
    loadCharts().then(
      (loaded) => {
        if (!gone && box.current) chart = draw(loaded, box.current);
      },
      () => setFailed(true),
    );
    return () => {
      gone = true;
      chart?.destroy();
    };
  }, [key]);
  return failed ? <p class="error">The chart could not be loaded.</p> : <div class="chart" role="img" aria-label={label} ref={box} />;
}

/** A turn's facts beside its words: only what was recorded. */
function TurnFacts({ turn }: { turn: Turn }) {
  const facts: string[] = [];
  if (turn.model) facts.push(turn.model);
  if (typeof turn.ttft_ms === "number") facts.push(`first token ${turn.ttft_ms} ms`);
  if (typeof turn.duration_ms === "number") facts.push(`whole reply ${duration(turn.duration_ms)}`);
  if (typeof turn.input_tokens === "number") facts.push(`${count(turn.input_tokens)} tokens in`);
  if (typeof turn.output_tokens === "number") facts.push(`${count(turn.output_tokens)} tokens out`);
  if (turn.stop_reason && turn.stop_reason !== "end_turn") facts.push(`stopped: ${turn.stop_reason}`);
  if (turn.lang) facts.push(turn.lang);
  return (
    <>
      {turn.interrupted && <span class="tag warn">interrupted</span>}
      {turn.failure_reason && <span class="tag warn">model failed ({turn.failure_reason}): fallback line said</span>}
      {facts.map((fact) => (
        <span class="tag" key={fact}>
          {fact}
        </span>
      ))}
      <span class="tag">{new Date(turn.created_at_ms).toLocaleTimeString()}</span>
    </>
  );
}

const json = (value: unknown) => JSON.stringify(value, null, 2);

/** Tool calls stored with a reply (agents that call tools). */
function ToolCalls({ calls }: { calls: NonNullable<Turn["tool_calls"]> }) {
  return (
    <ul class="tools">
      {calls.map((tool, index) => (
        <li key={index}>
          <details>
            <summary>
              Tool <code>{tool.name ?? "?"}</code>
              {typeof tool.duration_ms === "number" && ` · ${duration(tool.duration_ms)}`}
              {tool.error ? ` · failed: ${tool.error}` : ""}
            </summary>
            {tool.input !== undefined && <pre>{json(tool.input)}</pre>}
            {tool.result !== undefined && <pre>{json(tool.result)}</pre>}
          </details>
        </li>
      ))}
    </ul>
  );
}

export function CallDetail({ api, id }: { api: Api; id: string }) {
  const [call, setCall] = useState<CallView | null>(null);
  const [turns, setTurns] = useState<Turn[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [live, setLive] = useState<LiveState | null>(null);
  const now = useNow(call?.status === "active");

  const load = async () => {
    try {
      const [view, list] = await Promise.all([api.call<CallView>("GET", callPath(id)), api.call<TurnList>("GET", `${callPath(id)}/turns`)]);
      setCall(view);
      setTurns(list.turns);
      setError(null);
    } catch (caught) {
      setError(asApiError(caught));
      setTurns((current) => current ?? []);
    }
  };
  const refresh = useCoalesced(load, 200);
  useEffect(() => {
    load();
  }, [api, id]);
  const active = call?.status === "active";
  useEffect(() => {
    if (!active) return;
    // History first, then live; the stream ends with the call (and a 204 after it).
    const stream = follow(api, `${callPath(id)}/events`, { onMessage: refresh, onState: (state) => setLive(state) });
    return () => stream.stop();
  }, [api, id, active]);

  const series = latencySeries(turns ?? []);
  const ttfts = [...series.ttft].sort((a, b) => a - b);
  const median = ttfts.length ? ttfts[Math.floor((ttfts.length - 1) / 2)] : null;
  return (
    <section>
      <p>
        <a href={href.calls()}>← All calls</a>
      </p>
      <h1>Call {id}</h1>
      {error && <ErrorNote error={error} />}
      {call && (
        <dl class="facts">
          <dt>Status</dt>
          <dd>
            {active ? <span class="badge live">live</span> : <span class="badge">ended{call.end_reason ? ` (${call.end_reason})` : ""}</span>}
            {active && live && <span class="muted"> {live === "live" ? "following its events" : LIVE_TEXT[live]}</span>}
          </dd>
          <dt>Agent</dt>
          <dd>{call.agent_id ?? "—"}</dd>
          <dt>Region</dt>
          <dd>{call.region}</dd>
          <dt>Started</dt>
          <dd>{when(call.started_at_ms)}</dd>
          <dt>Length</dt>
          <dd>{duration(callLength({ started_at_ms: call.started_at_ms, ended_at_ms: call.ended_at_ms ?? undefined }, now))}</dd>
          <dt>Caller turns</dt>
          <dd>{call.turn_count}</dd>
        </dl>
      )}
      <h2>Latency</h2>
      {series.seq.length === 0 ? (
        <p class="muted">{turns === null ? "Loading…" : "No reply has been timed yet."}</p>
      ) : (
        <figure class="latency" data-points={series.seq.length}>
          <ChartBox
            label={`Latency of ${series.seq.length} replies: first token from ${Math.min(...series.ttft)} to ${Math.max(...series.ttft)} ms`}
            points={series}
            draw={(loaded, box) => loaded.latencyChart(box, series)}
          />
          <figcaption>
            First token and whole reply per reply, in milliseconds. Median first token {median} ms over {series.seq.length} {series.seq.length === 1 ? "reply" : "replies"}.
          </figcaption>
        </figure>
      )}
      <h2>Transcript</h2>
      {turns === null ? (
        <p class="muted">Loading the transcript…</p>
      ) : turns.length === 0 ? (
        <p>Nothing was said yet.</p>
      ) : (
        <div class="transcript" role="log" aria-label="Transcript" tabIndex={0}>
          <ol>
            {turns.map((turn) => (
              <li key={turn.seq} data-seq={turn.seq} class={`entry ${turn.role === "user" ? "you" : turn.role === "assistant" ? "agent" : "dtmf"}${turn.interrupted ? " interrupted" : ""}`}>
                <span class="who">
                  {turn.seq}. {speaker(turn)}
                </span>
                <span class="text">{turn.text}</span>
                <TurnFacts turn={turn} />
                {turn.tool_calls?.length ? <ToolCalls calls={turn.tool_calls} /> : null}
              </li>
            ))}
          </ol>
        </div>
      )}
    </section>
  );
}
