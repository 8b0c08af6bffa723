// The console's two charts, drawn by uPlot (a small canvas chart library, pinned in the
// package-lock; its stylesheet is appended to console.css by the build). Loaded on demand by the
// Calls and Usage pages, so the sign-in page and the agents pages never download it.
// uPlot's options: https://github.com/leeoniya/uPlot/tree/master/docs

import uPlot from "uplot";
import type { UsageDay } from "./api";
import type { LatencySeries } from "./format";

const HEIGHT = 220;
// The stylesheet's accent and a contrasting orange: told apart by hue and by dash.
const BLUE = "#1d4ed8";
const ORANGE = "#c2410c";
const INK = "#374151";
const GRID = "#e5e7eb";

/** An axis; `scale` and `side` only when given (uPlot copies an `undefined` over its default). */
function axis(label: string | undefined, scale?: string, side?: 1 | 3): uPlot.Axis {
  const drawn: uPlot.Axis = { stroke: INK, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID, width: 1 } };
  if (label) drawn.label = label;
  if (scale) drawn.scale = scale;
  if (side) drawn.side = side;
  return drawn;
}

/** Keeps the chart as wide as its box. */
function sized(chart: uPlot, box: HTMLElement): uPlot {
  const resize = new ResizeObserver(() => chart.setSize({ width: Math.max(240, box.clientWidth), height: HEIGHT }));
  resize.observe(box);
  const destroy = chart.destroy.bind(chart);
  chart.destroy = () => {
    resize.disconnect();
    destroy();
  };
  return chart;
}

/** Time to first token and the reply's whole duration, per reply of the call. */
export function latencyChart(box: HTMLElement, series: LatencySeries): uPlot {
  const chart = new uPlot(
    {
      width: Math.max(240, box.clientWidth),
      height: HEIGHT,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      // Turn numbers with a turn's margin each side (one reply still has a width), and
      // milliseconds from zero.
      scales: { x: { time: false, range: (_u, min, max) => [min - 1, max + 1] }, y: { range: (_u, _min, max) => [0, Math.max(10, max * 1.1)] } },
      axes: [axis("Reply (turn number)"), axis("milliseconds")],
      series: [
        { label: "Turn" },
        { label: "First token (ms)", stroke: BLUE, width: 2, points: { size: 7, fill: BLUE } },
        { label: "Whole reply (ms)", stroke: ORANGE, width: 2, dash: [6, 4], points: { size: 7, fill: ORANGE } },
      ],
    },
    latencyData(series),
    box,
  );
  return sized(chart, box);
}

export function latencyData(series: LatencySeries): uPlot.AlignedData {
  return [series.seq, series.ttft, series.duration];
}

/** Calls (bars) and minutes (line) per day. */
export function usageChart(box: HTMLElement, days: UsageDay[]): uPlot {
  const chart = new uPlot(
    {
      width: Math.max(240, box.clientWidth),
      height: HEIGHT,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { calls: { auto: true, range: (_u, _min, max) => [0, Math.max(1, max)] }, minutes: { auto: true, range: (_u, _min, max) => [0, Math.max(1, max)] } },
      axes: [axis(undefined), axis("calls", "calls", 3), axis("minutes", "minutes", 1)],
      series: [
        { label: "Day" },
        { label: "Calls", scale: "calls", stroke: BLUE, fill: "rgba(29, 78, 216, 0.35)", width: 1, paths: uPlot.paths.bars?.({ size: [0.6, 48] }), points: { show: false } },
        { label: "Minutes", scale: "minutes", stroke: ORANGE, width: 2, dash: [6, 4], points: { size: 6, fill: ORANGE } },
      ],
    },
    usageData(days),
    box,
  );
  return sized(chart, box);
}

/** Unix seconds of a UTC day's start (uPlot's time axis). */
const daySeconds = (day: string) => Date.parse(`${day}T00:00:00Z`) / 1000;

export function usageData(days: UsageDay[]): uPlot.AlignedData {
  return [days.map((day) => daySeconds(day.day)), days.map((day) => day.calls), days.map((day) => day.minutes)];
}
