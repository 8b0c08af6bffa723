// The agent form as data: every field the editor shows, by its JSON path in `AgentSpec`
// (shared/src/agent.rs). The path is also what the origin's 400 names in `error.field`, so an
// error lands next to its field by equality, never by reading the message. A new agent field
// (issues 13 and 14: ConversationRelay attributes, guardrails, fallback lines, tools, webhooks)
// is one more entry here, in a section of its own if it needs one.

import type { AgentSpec } from "./api";

export type FieldKind =
  /** One line of text; empty means absent. */
  | "text"
  /** Several lines of text; empty means absent. */
  | "textarea"
  /** A number; empty means absent (the origin's default). */
  | "number"
  /** One entry per line; empty means an empty list. */
  | "lines"
  /** One entry per line, or absent (the origin's default) while "use the default" is ticked. */
  | "optional-lines"
  /** A JSON value (a list or an object); empty means absent (the origin's default). */
  | "json";

export interface FieldDef {
  path: string;
  label: string;
  kind: FieldKind;
  hint?: string;
  required?: boolean;
  /** Only when creating (the id is part of the URL, not the body). */
  createOnly?: boolean;
  /** For "number": the browser's own range hints (the origin decides). */
  min?: number;
  max?: number;
  step?: string;
  /** For "optional-lines": the label of the "use the default" box. */
  defaultLabel?: string;
}

export interface Section {
  id: string;
  title: string;
  fields: FieldDef[];
}

/** The id path: not in the body; the edge answers `invalid_id` about it. */
export const ID_FIELD = "id";

export const SECTIONS: Section[] = [
  {
    id: "agent",
    title: "Agent",
    fields: [
      { path: ID_FIELD, label: "Agent id", kind: "text", required: true, createOnly: true, hint: "1 to 64 letters, digits, '-' or '_'; part of the URL, fixed once created." },
      { path: "name", label: "Name", kind: "text", required: true },
      { path: "system_prompt", label: "System prompt", kind: "textarea", required: true },
      { path: "greeting", label: "Greeting", kind: "textarea", hint: "Spoken when a call connects. Empty: the agent waits for the caller." },
    ],
  },
  {
    id: "model",
    title: "Model chain",
    fields: [
      { path: "model", label: "Model", kind: "text", hint: "Bedrock model id or inference profile. Empty: the origin's default chain." },
      {
        path: "fallback_models",
        label: "Fallback models",
        kind: "optional-lines",
        defaultLabel: "Use the origin's default fallbacks",
        hint: "One model id per line, tried in order when the one before is throttled or unavailable. Empty: no fallback.",
      },
    ],
  },
  {
    id: "inference",
    title: "Inference",
    fields: [
      { path: "inference.max_tokens", label: "Max tokens", kind: "number", min: 1, max: 64000, step: "1", hint: "Longest reply. Empty: 512." },
      { path: "inference.temperature", label: "Temperature", kind: "number", min: 0, max: 1, step: "0.05", hint: "0 to 1. Empty: the model's default." },
      { path: "inference.top_p", label: "Top p", kind: "number", min: 0, max: 1, step: "0.05", hint: "0 to 1. Empty: the model's default." },
      { path: "inference.stop_sequences", label: "Stop sequences", kind: "lines", hint: "One per line, at most 4." },
    ],
  },
  {
    id: "voice",
    title: "Voice (ConversationRelay)",
    fields: [
      { path: "voice.voice", label: "Voice", kind: "text", hint: "TTS voice, e.g. en-US-Journey-O." },
      { path: "voice.language", label: "Language", kind: "text", hint: "BCP 47, e.g. en-US." },
      { path: "voice.tts_provider", label: "TTS provider", kind: "text", hint: "e.g. Google, ElevenLabs." },
      { path: "voice.transcription_provider", label: "Transcription provider", kind: "text", hint: "e.g. Deepgram." },
    ],
  },
  {
    id: "conversation",
    title: "Conversation",
    fields: [
      { path: "fallback_utterance", label: "Fallback line", kind: "text", hint: "Said when every model fails, so the caller never hears silence. Empty: the origin's default." },
      { path: "idle_reprompt_secs", label: "Silence before a reprompt (s)", kind: "number", min: 0, step: "1", hint: "0 turns reprompting off. Empty: the origin's default." },
      { path: "idle_reprompt", label: "Reprompt", kind: "text", hint: "Said to a silent caller. Empty: the origin's default." },
      { path: "idle_reprompts", label: "Reprompts before the goodbye", kind: "number", min: 0, step: "1", hint: "Empty: the origin's default." },
      { path: "idle_goodbye", label: "Goodbye to a silent caller", kind: "text", hint: "Said before the agent ends the call. Empty: the origin's default." },
      { path: "voicemail_message", label: "Voicemail message", kind: "textarea", hint: "Left on an answering machine (outbound calls asking for detect_message_end). Empty: a machine is hung up on." },
    ],
  },
  {
    id: "tools",
    title: "Tools",
    fields: [
      {
        path: "tools",
        label: "Tools (JSON)",
        kind: "json",
        hint: 'A list of {"name", "description", "input_schema", "url", "timeout_ms"?}; each call is a signed POST to the url (see the signing secret). Empty: no tools.',
      },
      {
        path: "builtin_tools",
        label: "Built-in tools (JSON)",
        kind: "json",
        hint: 'e.g. {"end_call": {}, "transfer_call": {"targets": ["+14155550123"]}, "send_digits": {}, "switch_language": {}}. Empty: none.',
      },
      { path: "filler_after_ms", label: "Filler after (ms)", kind: "number", min: 0, step: "1", hint: "A tool call keeping the caller waiting this long gets the filler line. Empty: 700." },
      { path: "filler_utterance", label: "Filler line", kind: "text", hint: "Said while a slow tool call runs. Empty: the origin's default." },
    ],
  },
  {
    id: "phone",
    title: "Phone numbers",
    fields: [{ path: "phone_numbers", label: "Phone numbers", kind: "lines", hint: "E.164, one per line (+14155550100). Calls to these numbers reach this agent." }],
  },
];

export const FIELDS: FieldDef[] = SECTIONS.flatMap((section) => section.fields);
const byPath = new Map(FIELDS.map((field) => [field.path, field]));

/** The form's state: each field's text, plus `<path>#default` ("1" or "") for optional lists. */
export type FormValues = Record<string, string>;
export const defaultKey = (path: string) => `${path}#default`;

type Json = Record<string, unknown>;

function read(object: Json, path: string): unknown {
  let value: unknown = object;
  for (const key of path.split(".")) {
    if (!value || typeof value !== "object") return undefined;
    value = (value as Json)[key];
  }
  return value;
}

function write(object: Json, path: string, value: unknown): void {
  const keys = path.split(".");
  const last = keys.pop() as string;
  let parent = object;
  for (const key of keys) {
    const next = parent[key];
    if (!next || typeof next !== "object") parent[key] = {};
    parent = parent[key] as Json;
  }
  if (value === undefined) delete parent[last];
  else parent[last] = value;
}

/** The form of an existing spec (or of nothing, for a new agent). */
export function formOf(spec: Partial<AgentSpec> | null, id = ""): FormValues {
  const values: FormValues = { [ID_FIELD]: id };
  for (const field of FIELDS) {
    if (field.path === ID_FIELD) continue;
    const value = spec ? read(spec as Json, field.path) : undefined;
    if (field.kind === "optional-lines") values[defaultKey(field.path)] = value === undefined ? "1" : "";
    values[field.path] =
      field.kind === "json"
        ? isEmptyJson(value)
          ? ""
          : JSON.stringify(value, null, 2)
        : Array.isArray(value)
          ? value.join("\n")
          : value === undefined || value === null
            ? ""
            : String(value);
  }
  return values;
}

/** Absent, an empty list or an empty object: shown as an empty box. */
const isEmptyJson = (value: unknown) =>
  value === undefined || value === null || (typeof value === "object" && Object.keys(value as object).length === 0);

const lines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);

/**
 * The spec to PUT: `base` (the agent as loaded, so fields this form does not show survive an
 * edit) with every field of the form written over it. Numbers that are not numbers are refused
 * here, by field; everything else is the origin's to judge.
 */
export function specOf(values: FormValues, base: Partial<AgentSpec> | null): { spec: AgentSpec; errors: Record<string, string> } {
  const spec: Json = base ? structuredClone(base as Json) : {};
  for (const key of ["id", "tenant_id", "version", "created_at_ms", "updated_at_ms"]) delete spec[key];
  const errors: Record<string, string> = {};
  for (const field of FIELDS) {
    if (field.path === ID_FIELD) continue;
    const raw = values[field.path] ?? "";
    switch (field.kind) {
      case "text":
      case "textarea": {
        // Required text is sent even when empty, so the origin names the problem.
        const text = field.kind === "text" ? raw.trim() : raw;
        write(spec, field.path, text.trim() || field.required ? text : undefined);
        break;
      }
      case "number": {
        const text = raw.trim();
        const number = Number(text);
        if (text && !Number.isFinite(number)) errors[field.path] = `${field.label} must be a number`;
        write(spec, field.path, text ? number : undefined);
        break;
      }
      case "lines":
        write(spec, field.path, lines(raw));
        break;
      case "optional-lines":
        write(spec, field.path, values[defaultKey(field.path)] ? undefined : lines(raw));
        break;
      case "json": {
        const text = raw.trim();
        if (!text) {
          write(spec, field.path, undefined);
          break;
        }
        try {
          write(spec, field.path, JSON.parse(text));
        } catch (error) {
          errors[field.path] = `${field.label} is not JSON: ${(error as Error).message}`;
        }
        break;
      }
    }
  }
  return { spec: spec as AgentSpec, errors };
}

/** Stable codes that name a field without an `error.field` (the edge's own checks). */
const FIELD_OF_CODE: Record<string, string> = {
  invalid_id: ID_FIELD,
  phone_number_taken: "phone_numbers",
};

/**
 * Which form field an API error is about, or null when it is about the whole form. An error
 * inside a JSON field (`tools[0].url`) lands on that field (`tools`).
 */
export function fieldOfError(error: { field: string | null; code: string }): string | null {
  const field = error.field ?? FIELD_OF_CODE[error.code] ?? null;
  if (!field) return null;
  if (byPath.has(field)) return field;
  const holder = FIELDS.find((def) => def.kind === "json" && (field.startsWith(`${def.path}[`) || field.startsWith(`${def.path}.`)));
  return holder ? holder.path : null;
}

/** The id rule of shared::identifier, checked before the request (the URL carries it). */
export const isAgentId = (id: string) => /^[A-Za-z0-9_-]{1,64}$/.test(id);
