// One format for every benchmark: a table on stdout (figure, value, target, baseline, ratio)
// and the same rows as JSON in target/bench/<area>.json so runs can be compared;
// tests/bench/summary.mjs gathers every area's into one table at the end of `make bench`.

import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * A measured figure.
 * @typedef {object} Row
 * @property {string} figure     what was measured, e.g. "RS256 verifications/s"
 * @property {number} value      the measurement
 * @property {string} unit       e.g. "ops/s", "ms", "KB"
 * @property {string} [target]   the target as text, e.g. "<= 1 ms" (omit when none)
 * @property {boolean} [met]     whether the target is met (omit when no target)
 * @property {string} [baseline] what the ratio compares against, measured in the same run
 * @property {number} [ratio]    value / baseline value
 * @property {boolean} [headline] shown in `make bench`'s closing table (tests/bench/summary.mjs)
 *                               even without a target; rows with a target always are
 */

/** Prints the table and writes the JSON; returns false when any target is missed. */
export function report(area, rows, notes = []) {
  const header = ["figure", "value", "target", "met", "ratio", "baseline"];
  const table = rows.map((row) => [
    row.figure,
    `${formatNumber(row.value)} ${row.unit}`,
    row.target ?? "",
    row.met === undefined ? "" : row.met ? "yes" : "NO",
    row.ratio === undefined ? "" : `${formatNumber(row.ratio)}x`,
    row.baseline ?? "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  console.log(`\n${area}`);
  console.log(line(header));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const r of table) console.log(line(r));
  for (const note of notes) console.log(`  note: ${note}`);

  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? "unknown", memory_gib: Math.round(os.totalmem() / 2 ** 30), node: process.version };
  const outDir = path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "bench");
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    path.join(outDir, `${area}.json`),
    JSON.stringify({ area, measured_at: new Date().toISOString(), machine, rows, notes }, null, 2),
  );
  return rows.every((row) => row.met !== false);
}

function formatNumber(n) {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** Percentile (0..100) of an unsorted array of numbers. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}
