// The playground's side of a call's relay WebSocket: the console speaks ConversationRelay as a
// carrier does (ARCHITECTURE.md, "ConversationRelay protocol"; Twilio's ConversationRelay
// WebSocket messages). It sends `setup` first, a final `prompt` (`last: true`) per utterance,
// `interrupt` with what was heard when the user speaks or types over a reply, and `dtmf` per key;
// it receives `text` tokens (`last: true` closes a turn), `play`, `sendDigits`, `language` and
// `end`. No I/O here: the view sends what these methods return and feeds in what arrives.

export type Entry =
  | { kind: "agent"; text: string; done: boolean; interrupted: boolean; heard: string; ttftMs: number | null }
  | { kind: "you"; text: string }
  | { kind: "dtmf"; digit: string }
  | { kind: "event"; text: string };

export type Outbound = Record<string, unknown> & { type: string };

/** The DTMF keys of a phone keypad (the protocol also allows A-D). */
export const KEYPAD = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];

export class Conversation {
  entries: Entry[] = [];
  ended = false;
  /** When the last prompt went out, until the reply's first token. */
  private promptAt: number | null = null;
  /** When the open reply's first token arrived. */
  private replyStartedAt: number | null = null;

  /** The open reply, if the agent is speaking. */
  get reply(): Extract<Entry, { kind: "agent" }> | null {
    const last = this.entries.at(-1);
    return last?.kind === "agent" && !last.done ? last : null;
  }

  /** Whether a reply is expected or streaming. */
  get busy(): boolean {
    return this.reply !== null || this.promptAt !== null;
  }

  /** The first message on the socket. The call already exists (POST /api/v1/calls), so the
   * origin only binds to it; `agentId` lets any replica bind it after a failover. */
  setup(callId: string, agentId: string): Outbound {
    return {
      type: "setup",
      sessionId: `console-${callId}`,
      callSid: callId,
      accountSid: "",
      from: "",
      to: "",
      direction: "inbound",
      customParameters: { agentId, client: "console" },
    };
  }

  /**
   * What the user said (typed or recognised), as a final prompt. Over a streaming reply an
   * `interrupt` goes first, carrying what the user heard (`heard`: the text spoken aloud so
   * far, or, without speech, the text shown).
   */
  say(text: string, now: number, heard?: string): Outbound[] {
    const out: Outbound[] = [];
    const interrupt = this.interrupt(now, heard);
    if (interrupt) out.push(interrupt);
    this.entries.push({ kind: "you", text });
    this.promptAt = now;
    out.push({ type: "prompt", voicePrompt: text, lang: "en-US", last: true });
    return out;
  }

  /** The user spoke over the reply: the reply stops where it was heard. Null when none plays. */
  interrupt(now: number, heard?: string): Outbound | null {
    const reply = this.reply;
    if (!reply) return null;
    reply.done = true;
    reply.interrupted = true;
    reply.heard = heard ?? reply.text;
    const message = {
      type: "interrupt",
      utteranceUntilInterrupt: reply.heard,
      durationUntilInterruptMs: Math.max(0, Math.round(now - (this.replyStartedAt ?? now))),
    };
    this.replyStartedAt = null;
    return message;
  }

  dtmf(digit: string): Outbound {
    this.entries.push({ kind: "dtmf", digit });
    return { type: "dtmf", digit };
  }

  /** The relay socket closed. The edge closes it when the call ends, sometimes before the
   * origin's `end` reaches it, so the close itself can be the end of the call. */
  closed(code: number, reason: string): void {
    if (this.ended) return;
    const reply = this.reply;
    if (reply) reply.done = true;
    this.promptAt = null;
    this.ended = true;
    this.entries.push({ kind: "event", text: `The relay closed (${code}${reason ? `: ${reason}` : ""})` });
  }

  /** A message from the relay. Returns the text to speak, if any. */
  receive(message: unknown, now: number): string {
    if (!message || typeof message !== "object") return "";
    const m = message as Record<string, unknown>;
    switch (m.type) {
      case "text": {
        const token = typeof m.token === "string" ? m.token : "";
        let reply = this.reply;
        if (!reply && (token || m.last !== true)) {
          const ttftMs = this.promptAt === null ? null : Math.round(now - this.promptAt);
          reply = { kind: "agent", text: "", done: false, interrupted: false, heard: "", ttftMs };
          this.entries.push(reply);
          this.promptAt = null;
          this.replyStartedAt = now;
        }
        if (reply) {
          reply.text += token;
          if (m.last === true) {
            reply.done = true;
            reply.heard = reply.text;
            this.replyStartedAt = null;
          }
        } else if (m.last === true && this.promptAt !== null) {
          // A turn closed without a word: every model of the agent's chain failed (the origin's
          // `error` about it goes to the edge's log, not to the carrier).
          this.promptAt = null;
          this.entries.push({ kind: "event", text: "The agent gave no reply (its models did not answer)" });
        }
        return token;
      }
      case "play":
        this.entries.push({ kind: "event", text: `The agent plays ${String(m.source ?? "audio")}` });
        return "";
      case "sendDigits":
        this.entries.push({ kind: "event", text: `The agent sends the digits ${String(m.digits ?? "")}` });
        return "";
      case "language":
        this.entries.push({ kind: "event", text: `The agent switches language (speech ${String(m.ttsLanguage ?? "unchanged")}, transcription ${String(m.transcriptionLanguage ?? "unchanged")})` });
        return "";
      case "end": {
        const reply = this.reply;
        if (reply) reply.done = true;
        this.promptAt = null;
        this.ended = true;
        this.entries.push({ kind: "event", text: `Call ended${endReason(m.handoffData)}` });
        return "";
      }
      default:
        return "";
    }
  }
}

/** `handoffData` is JSON text; the origin puts the end reason in it. */
function endReason(handoff: unknown): string {
  if (typeof handoff !== "string") return "";
  try {
    const data = JSON.parse(handoff) as { reason?: unknown };
    return typeof data.reason === "string" ? ` (${data.reason})` : "";
  } catch {
    return "";
  }
}

/** The relay URL as a WebSocket URL (the edge may answer it as http(s)://). */
export function websocketUrl(relayUrl: string, page: Location): string {
  const url = new URL(relayUrl, page.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}
