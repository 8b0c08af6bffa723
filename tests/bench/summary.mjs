// The one table of `make bench`: every benchmark's figures that have a target or are marked
// `headline`, with the target, whether it is met, and the ratio to the baseline measured in the
// same run; written as target/bench/summary.json beside the per-area files.
//
//   node tests/bench/summary.mjs --since <epoch ms> --timings <file> area ...
//       prints the table, writes summary.json; exits 1 when a target is missed or an area did
//       not produce figures in this run (a file older than --since is a previous run's)
//   node tests/bench/summary.mjs --markdown
//       prints summary.json as the Markdown the README shows

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { root } from "./workerd.mjs";

const benchDir = path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "bench");
const summaryPath = path.join(benchDir, "summary.json");

function formatNumber(n) {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

const cell = (row) => ({
  area: row.area,
  figure: row.figure,
  value: row.value === undefined ? "—" : `${formatNumber(row.value)} ${row.unit ?? ""}`.trim(),
  target: row.target ?? "",
  met: row.met === undefined ? "" : row.met ? "yes" : "NO",
  ratio: row.ratio === undefined ? "" : `${formatNumber(row.ratio)}x`,
  baseline: row.baseline ?? "",
});
const COLUMNS = ["area", "figure", "value", "target", "met", "ratio", "baseline"];

/** The machine as this script sees it (the per-area files carry the same from report.mjs). */
function machine() {
  let model = os.cpus()[0]?.model ?? "unknown";
  try {
    model = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? model;
  } catch {
    // not Linux
  }
  return { cpus: os.cpus().length, cpu: model.trim(), memory_gib: Math.round(os.totalmem() / 2 ** 30), os: `${os.type()} ${os.release()}`, node: process.version };
}

function collect(areas, since) {
  const rows = [];
  const problems = [];
  for (const area of areas) {
    const file = path.join(benchDir, `${area}.json`);
    const result = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : undefined;
    if (!result || Date.parse(result.measured_at) < since) {
      problems.push(area);
      rows.push({ area, figure: "no figures from this run: the benchmark failed (see its output above)", met: false, failed: true });
      continue;
    }
    for (const row of result.rows) {
      if (row.target !== undefined || row.headline) rows.push({ area, ...row });
    }
  }
  return { rows, problems };
}

function printTable(rows) {
  const table = rows.map(cell);
  const widths = COLUMNS.map((c) => Math.max(c.length, ...table.map((r) => r[c].length)));
  const line = (r) => COLUMNS.map((c, i) => r[c].padEnd(widths[i])).join("  ").trimEnd();
  console.log(line(Object.fromEntries(COLUMNS.map((c) => [c, c]))));
  console.log(line(Object.fromEntries(COLUMNS.map((c, i) => [c, "-".repeat(widths[i])]))));
  for (const r of table) console.log(line(r));
}

function markdown() {
  const summary = JSON.parse(readFileSync(summaryPath, "utf8"));
  const m = summary.machine;
  const durations = Object.entries(summary.durations_s ?? {})
    .map(([step, s]) => `${step} ${Math.round(s)} s`)
    .join(", ");
  console.log(`Measured ${summary.measured_at.slice(0, 16).replace("T", " ")} UTC on ${m.cpus} × ${m.cpu}, ${m.memory_gib} GiB (${m.os}, Node ${m.node}); ${durations}.\n`);
  console.log(`| ${COLUMNS.join(" | ")} |`);
  console.log(`| ${COLUMNS.map(() => "---").join(" | ")} |`);
  for (const r of summary.rows.map(cell)) console.log(`| ${COLUMNS.map((c) => r[c].replaceAll("|", "\\|")).join(" | ")} |`);
}

function main(argv) {
  if (argv[0] === "--markdown") return markdown();
  let since = 0;
  let timings;
  const areas = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--since") since = Number(argv[++i]);
    else if (argv[i] === "--timings") timings = argv[++i];
    else areas.push(argv[i]);
  }
  const { rows, problems } = collect(areas, since);
  const durations_s = {};
  if (timings && existsSync(timings)) {
    for (const line of readFileSync(timings, "utf8").split("\n").filter(Boolean)) {
      const [step, seconds] = line.split("\t");
      durations_s[step] = Number(seconds);
    }
  }
  const missed = rows.filter((row) => row.met === false && !row.failed);
  const summary = { measured_at: new Date().toISOString(), machine: machine(), durations_s, areas, rows, missed: missed.map((r) => `${r.area}: ${r.figure}`) };
  writeFileSync(summaryPath, JSON.stringify(summary, null, 2));

  const m = summary.machine;
  console.log(`\nAYBIZA Edge benchmarks — ${m.cpus} × ${m.cpu}, ${m.memory_gib} GiB, ${summary.measured_at}`);
  printTable(rows);
  const total = Object.values(durations_s).reduce((a, b) => a + b, 0);
  if (total > 0) console.log(`  time: ${Object.entries(durations_s).map(([s, t]) => `${s} ${Math.round(t)} s`).join(", ")}; total ${Math.round(total)} s`);
  console.log(`  every figure of every area, with its notes: ${benchDir}/<area>.json; this table: ${summaryPath}`);
  if (missed.length > 0) console.log(`  targets missed: ${missed.length} (${summary.missed.join("; ")})`);
  if (problems.length > 0) console.log(`  benchmarks that failed: ${problems.join(", ")}`);
  process.exitCode = missed.length > 0 || problems.length > 0 ? 1 : 0;
}

main(process.argv.slice(2));
