// What the Calls and Usage pages compute from the API's answers, without a browser: durations as
// people read them, a transcript's latency series, usage days filled into a continuous range.

import type { Call, Turn, UsageDay, UsageReport } from "./api";

/** A duration as people read it: `850 ms`, `4.2 s`, `3 min 05 s`, `1 h 02 min`. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, "0")} s`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")} min`;
}

/** How long a call has lasted: to its end, or to `now` while it is live (never below zero: the
 * origin's clock stamped its start, this browser's says now). */
export function callLength(call: Pick<Call, "started_at_ms" | "ended_at_ms">, now: number): number {
  return Math.max(0, (call.ended_at_ms ?? now) - call.started_at_ms);
}

/** Who said a turn. */
export const speaker = (turn: Turn) => (turn.role === "user" ? "Caller" : turn.role === "assistant" ? "Agent" : "Key press");

/** The latency chart's series: one point per reply the model timed, in call order. */
export interface LatencySeries {
  /** The reply's `seq`. */
  seq: number[];
  ttft: number[];
  duration: number[];
}

export function latencySeries(turns: Turn[]): LatencySeries {
  const replies = turns.filter((turn) => turn.role === "assistant" && typeof turn.ttft_ms === "number");
  return {
    seq: replies.map((turn) => turn.seq),
    ttft: replies.map((turn) => turn.ttft_ms ?? 0),
    duration: replies.map((turn) => turn.duration_ms ?? turn.ttft_ms ?? 0),
  };
}

const MS_PER_DAY = 86_400_000;

/** Every `YYYY-MM-DD` from `from` to `to`, inclusive (UTC, as the API counts days). */
export function daysBetween(from: string, to: string): string[] {
  const first = Date.parse(`${from}T00:00:00Z`);
  const last = Date.parse(`${to}T00:00:00Z`);
  if (!Number.isFinite(first) || !Number.isFinite(last) || last < first) return [];
  const days: string[] = [];
  for (let at = first; at <= last && days.length < 400; at += MS_PER_DAY) days.push(new Date(at).toISOString().slice(0, 10));
  return days;
}

/** The report's days over its whole range, a day without usage as zeros (the API omits it). */
export function usageDays(report: UsageReport): UsageDay[] {
  const byDay = new Map(report.days.map((day) => [day.day, day]));
  return daysBetween(report.from, report.to).map(
    (day) => byDay.get(day) ?? { day, calls: 0, turns: 0, input_tokens: 0, output_tokens: 0, minutes: 0, tool_calls: 0 },
  );
}

/** A number with thousands separators. */
export const count = (n: number) => n.toLocaleString("en-US");
