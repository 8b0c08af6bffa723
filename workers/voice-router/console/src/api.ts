// The public API, as the console uses it: same host (so no CORS), the same routes and scopes as
// any client, errors in the edge's one envelope
// `{"error":{"code","message","request_id","field"?}}` (ARCHITECTURE.md, "Public HTTP surface";
// `field` names the invalid field of an agent, docs/configuration.md).

/** An answer that was not 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field: string | null = null,
    readonly requestId: string | null = null,
  ) {
    super(message);
  }
}

interface Envelope {
  error?: { code?: unknown; message?: unknown; request_id?: unknown; field?: unknown };
}

const text = (value: unknown): string | null => (typeof value === "string" && value ? value : null);

/** Turns a non-2xx answer into an ApiError, whatever its body holds. */
export async function errorOf(response: Response): Promise<ApiError> {
  let body: Envelope = {};
  try {
    body = (await response.json()) as Envelope;
  } catch {
    // not JSON: the status says it all
  }
  const error = body.error ?? {};
  return new ApiError(
    response.status,
    text(error.code) ?? `http_${response.status}`,
    text(error.message) ?? `the edge answered ${response.status}`,
    text(error.field),
    text(error.request_id),
  );
}

/** Called when the edge refuses the credential (401): the console signs out. */
let onUnauthorized: (error: ApiError) => void = () => {};
export function whenUnauthorized(handler: (error: ApiError) => void): void {
  onUnauthorized = handler;
}

export class Api {
  constructor(private readonly credential: string) {}

  /** A JSON request; resolves with the parsed body (null for 204). `keepalive` lets it finish
   * while the page is being closed. */
  async call<T>(method: string, path: string, body?: unknown, { keepalive = false } = {}): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.credential}`, accept: "application/json" };
    const init: RequestInit = { method, headers, cache: "no-store", credentials: "omit", keepalive };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response: Response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "network", "the edge did not answer; check the connection and retry");
    }
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401) onUnauthorized(error);
      throw error;
    }
    if (response.status === 204) return null as T;
    return (await response.json()) as T;
  }

  /** Opens a Server-Sent Events stream with a streaming `fetch` (a browser's `EventSource`
   * cannot send `Authorization`). Resolves with the open response (200), or null for 204 — the
   * stream has nothing more to say; a refusal is an ApiError as for `call`. */
  async stream(path: string, lastEventId: string | null, signal: AbortSignal): Promise<Response | null> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.credential}`, accept: "text/event-stream" };
    if (lastEventId) headers["last-event-id"] = lastEventId;
    let response: Response;
    try {
      response = await fetch(path, { headers, cache: "no-store", credentials: "omit", signal });
    } catch {
      throw new ApiError(0, "network", "the edge did not answer; retrying");
    }
    if (response.status === 204) return null;
    if (!response.ok || !response.body) {
      const error = await errorOf(response);
      if (response.status === 401) onUnauthorized(error);
      throw error;
    }
    return response;
  }
}

// ---- Shapes (shared/src/agent.rs, workers/voice-router/src/api.rs) ----

export interface InferenceSettings {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop_sequences?: string[];
}

export interface VoiceSettings {
  voice?: string;
  language?: string;
  tts_provider?: string;
  transcription_provider?: string;
}

/** `AgentSpec`: what PUT /api/v1/agents/{id} takes. Fields the console does not know yet are
 * kept as they came (an edit never drops them). */
export interface AgentSpec {
  name: string;
  system_prompt: string;
  greeting?: string;
  model?: string;
  fallback_models?: string[];
  inference?: InferenceSettings;
  voice?: VoiceSettings;
  phone_numbers?: string[];
  [more: string]: unknown;
}

/** `Agent`: the spec flattened with its id, tenant, version and times. */
export interface Agent extends AgentSpec {
  id: string;
  tenant_id: string;
  version: number;
  created_at_ms: number;
  updated_at_ms: number;
}

export interface AgentPage {
  agents: Agent[];
  next_after?: string;
}

/** POST /api/v1/calls answer. */
export interface CallCreated {
  call_id: string;
  region: string;
  relay_url: string;
  relay_token_expires_at: number;
}

/** GET /api/v1/calls/{id} and POST …/end answer. */
export interface CallView {
  call_id: string;
  status: string;
  agent_id: string | null;
  region: string;
  started_at_ms: number;
  ended_at_ms: number | null;
  end_reason: string | null;
  turn_count: number;
}

// ---- The read API (shared/src/call.rs, call_list.rs, turn.rs, usage.rs, call_event.rs) ----

/** A call as the list shows it (`GET /api/v1/calls`). */
export interface Call {
  id: string;
  tenant_id: string;
  agent_id: string;
  source: "phone" | "api";
  status: "active" | "ended";
  region: string;
  /** The caller's turns (words and key presses). */
  turn_count: number;
  started_at_ms: number;
  ended_at_ms?: number;
  end_reason?: string;
  from?: string;
  to?: string;
  caller_name?: string;
}

export interface CallPage {
  calls: Call[];
  next_cursor?: string;
}

/** A tool call stored with a reply, when agents call tools (issue 14): shown as it comes. */
export interface ToolCall {
  name?: string;
  input?: unknown;
  result?: unknown;
  error?: string;
  duration_ms?: number;
}

/** A stored turn (`GET /api/v1/calls/{id}/turns`). */
export interface Turn {
  seq: number;
  role: "user" | "assistant" | "dtmf";
  text: string;
  interrupted: boolean;
  model?: string;
  input_tokens?: number;
  output_tokens?: number;
  ttft_ms?: number;
  duration_ms?: number;
  lang?: string;
  stop_reason?: string;
  failure_reason?: string;
  tool_calls?: ToolCall[];
  created_at_ms: number;
}

export interface TurnList {
  call_id: string;
  turns: Turn[];
}

export interface UsageDay {
  day: string;
  calls: number;
  turns: number;
  input_tokens: number;
  output_tokens: number;
  minutes: number;
  tool_calls: number;
}

/** `GET /api/v1/usage`. */
export interface UsageReport {
  tenant_id: string;
  from: string;
  to: string;
  days: UsageDay[];
  totals: UsageDay;
}

/** A call event (`/api/v1/events`, `/api/v1/calls/{id}/events`). */
export interface CallEvent {
  kind: "call_started" | "call_ended" | "turn_started" | "turn_finished" | "turn_interrupted";
  call_id: string;
  at_ms: number;
  seq?: number;
}

export const callPath = (id: string) => `/api/v1/calls/${encodeURIComponent(id)}`;

/** Every agent of the tenant, page by page (the origin's pages hold at most 100). */
export async function listAgents(api: Api): Promise<Agent[]> {
  const agents: Agent[] = [];
  let after: string | undefined;
  for (let page = 0; page < 50; page++) {
    const query = new URLSearchParams({ limit: "100" });
    if (after) query.set("after", after);
    const answer = await api.call<AgentPage>("GET", `/api/v1/agents?${query}`);
    agents.push(...answer.agents);
    if (!answer.next_after) break;
    after = answer.next_after;
  }
  return agents;
}

export const agentPath = (id: string) => `/api/v1/agents/${encodeURIComponent(id)}`;
