// Following a Server-Sent Events stream of the API (the tenant's call events, or one call's) with
// a streaming `fetch`, as a browser's EventSource would but with the `Authorization` header it
// cannot send: messages parsed as the HTML standard's event-stream interpretation says
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
// the last event id kept and sent back as `Last-Event-ID` on a reconnect, a `204` taken as
// "nothing more" (so a call's ended stream is not reopened), and a growing pause between tries.

import type { Api } from "./api";
import { ApiError } from "./api";

export interface SseMessage {
  event: string;
  id: string | null;
  data: string;
}

/** Turns chunks of an event stream into its messages. */
export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  /** The last event id the stream set (kept across messages, as `lastEventId`). */
  lastEventId: string | null = null;

  /** The messages completed by this chunk. */
  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const messages: SseMessage[] = [];
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      // A lone "\r" at the end may be the first half of "\r\n": wait for more.
      if (end < 0 || (end === this.buffer.length - 1 && this.buffer[end] === "\r")) break;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + (this.buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (this.data.length) messages.push({ event: this.event || "message", id: this.lastEventId, data: this.data.join("\n") });
        this.event = "";
        this.data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    }
    return messages;
  }
}

/** The pause before reconnect attempt `attempt` (0 after a stream that ended cleanly). */
export function retryDelayMs(attempt: number): number {
  return attempt <= 0 ? 250 : Math.min(15_000, 1000 * 2 ** (attempt - 1));
}

export type LiveState = "connecting" | "live" | "retrying" | "done";

export interface Follow {
  /** Each message, in order. */
  onMessage: (message: SseMessage) => void;
  /** Where the stream is. */
  onState?: (state: LiveState, error: ApiError | null) => void;
}

/** Follows `path` until `stop()` (or a 204: nothing more; or a refused credential). */
export function follow(api: Api, path: string, handlers: Follow): { stop: () => void } {
  const controller = new AbortController();
  const parser = new SseParser();
  const state = (value: LiveState, error: ApiError | null = null) => handlers.onState?.(value, error);
  (async () => {
    let failures = 0;
    while (!controller.signal.aborted) {
      state(failures ? "retrying" : "connecting");
      try {
        const response = await api.stream(path, parser.lastEventId, controller.signal);
        if (!response?.body) {
          state("done");
          return;
        }
        state("live");
        failures = 0;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          for (const message of parser.push(value)) handlers.onMessage(message);
        }
      } catch (caught) {
        if (controller.signal.aborted) return;
        const error = caught instanceof ApiError ? caught : new ApiError(0, "network", "the stream broke; reconnecting");
        // A refused credential signs the console out; a refused request will not get better.
        if (error.status === 401 || error.status === 403 || error.status === 404 || error.status === 400) {
          state("done", error);
          return;
        }
        failures += 1;
        state("retrying", error);
      }
      await new Promise((resolve) => setTimeout(resolve, retryDelayMs(failures)));
    }
  })();
  return { stop: () => controller.abort() };
}
