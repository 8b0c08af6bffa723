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
