// Usage per day (GET /api/v1/usage): calls and minutes as a chart, every figure in a table.

import { useEffect, useState } from "preact/hooks";
import { Api, ApiError, type UsageReport } from "./api";
import { ErrorNote } from "./agents";
import { ChartBox, Choice } from "./calls";
import { count, usageDays } from "./format";

const RANGES = [7, 30, 90];
const MS_PER_DAY = 86_400_000;
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export function Usage({ api }: { api: Api }) {
  const [range, setRange] = useState(30);
  const [report, setReport] = useState<UsageReport | null>(null);
  const [error, setError] = useState<ApiError | null>(null);

  useEffect(() => {
    const today = Date.now();
    const query = new URLSearchParams({ from: day(today - (range - 1) * MS_PER_DAY), to: day(today) });
    api.call<UsageReport>("GET", `/api/v1/usage?${query}`).then(
      (answer) => {
        setReport(answer);
        setError(null);
      },
      (caught: unknown) => setError(caught instanceof ApiError ? caught : new ApiError(0, "internal", String(caught))),
    );
  }, [api, range]);

  const days = report ? usageDays(report) : [];
  const used = days.filter((d) => d.calls || d.turns || d.minutes || d.tool_calls || d.input_tokens || d.output_tokens).reverse();
  return (
    <section>
      <div class="title-row">
        <h1>Usage</h1>
        <Choice id="usage-range" label="Days" value={String(range)} onChange={(value) => setRange(Number(value))} options={RANGES.map((n) => [String(n), `last ${n}`])} />
      </div>
      {error && <ErrorNote error={error} />}
      {!report ? (
        !error && <p class="muted">Loading usage…</p>
      ) : (
        <>
          <p class="muted">
            UTC days from {report.from} to {report.to}: {count(report.totals.calls)} calls, {count(report.totals.minutes)} minutes.
          </p>
          <figure class="usage" data-points={days.length}>
            <ChartBox
              label={`Calls and minutes per day from ${report.from} to ${report.to}: ${report.totals.calls} calls, ${report.totals.minutes} minutes in all`}
              points={days}
              draw={(loaded, box) => loaded.usageChart(box, days)}
            />
            <figcaption>Calls (bars, left axis) and minutes (dashed line, right axis) per UTC day. A call's minutes count once it has ended, rounded up per call.</figcaption>
          </figure>
          {used.length === 0 ? (
            <p>No usage in these days.</p>
          ) : (
            <table class="usage-table">
              <caption class="visually-hidden">Usage per day, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Day (UTC)</th>
                  <th scope="col">Calls</th>
                  <th scope="col">Minutes</th>
                  <th scope="col">Replies</th>
                  <th scope="col">Tokens in</th>
                  <th scope="col">Tokens out</th>
                  <th scope="col">Tool calls</th>
                </tr>
              </thead>
              <tbody>
                {used.map((d) => (
                  <tr key={d.day}>
                    <th scope="row">{d.day}</th>
                    <td>{count(d.calls)}</td>
                    <td>{count(d.minutes)}</td>
                    <td>{count(d.turns)}</td>
                    <td>{count(d.input_tokens)}</td>
                    <td>{count(d.output_tokens)}</td>
                    <td>{count(d.tool_calls)}</td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr>
                  <th scope="row">Total</th>
                  <td>{count(report.totals.calls)}</td>
                  <td>{count(report.totals.minutes)}</td>
                  <td>{count(report.totals.turns)}</td>
                  <td>{count(report.totals.input_tokens)}</td>
                  <td>{count(report.totals.output_tokens)}</td>
                  <td>{count(report.totals.tool_calls)}</td>
                </tr>
              </tfoot>
            </table>
          )}
        </>
      )}
    </section>
  );
}
