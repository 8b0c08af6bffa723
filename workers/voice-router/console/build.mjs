// Builds the console into dist/ (the `assets.directory` of wrangler/voice-router.toml):
//   dist/console/index.html, app.js (TypeScript + Preact bundled and minified by esbuild) and
//   the chunks it loads on demand (chunk-*.js: uPlot and the charts, for the Calls and Usage
//   pages only), console.css (with uPlot's stylesheet appended), and dist/_headers (the security headers Cloudflare adds to every asset; the
//   file itself is not served). Then measures what a browser downloads, gzip -9 per file, and
//   fails when the total exceeds the budget (issue 17: under 100 KB).
// Usage: node build.mjs   (voice-router's [build] command runs it after worker-build)

import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

const here = import.meta.dirname;
const dist = path.join(here, "dist");
/** Total gzip of the served files, in bytes (100 KB). */
export const GZIP_BUDGET = 100 * 1024;

let esbuild;
try {
  esbuild = await import("esbuild");
} catch {
  console.error("console: esbuild is not installed; run tests/stack/setup.sh (npm install in workers/voice-router/console)");
  process.exit(1);
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(path.join(dist, "console"), { recursive: true });

await esbuild.build({
  entryPoints: { app: path.join(here, "src/main.tsx") },
  outdir: path.join(dist, "console"),
  // `import("./chart")` becomes its own file, fetched when a page first draws a chart.
  splitting: true,
  chunkNames: "chunk-[hash]",
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  logLevel: "warning",
});
cpSync(path.join(here, "static/index.html"), path.join(dist, "console/index.html"));
// One stylesheet: the console's, then uPlot's (MIT; its classes only style the charts).
const uplotCss = readFileSync(path.join(here, "node_modules/uplot/dist/uPlot.min.css"), "utf8");
writeFileSync(
  path.join(dist, "console/console.css"),
  `${readFileSync(path.join(here, "static/console.css"), "utf8")}\n/* uPlot 1.6.32 (MIT), node_modules/uplot/dist/uPlot.min.css */\n${uplotCss}\n`,
);
cpSync(path.join(here, "static/_headers"), path.join(dist, "_headers"));

/** Every file a browser can fetch (everything but `_headers`), with its gzip size. */
export function servedSizes(dir = dist) {
  const sizes = [];
  const walk = (folder) => {
    for (const name of readdirSync(folder)) {
      const file = path.join(folder, name);
      if (statSync(file).isDirectory()) walk(file);
      else if (name !== "_headers") {
        const bytes = readFileSync(file);
        sizes.push({ file: path.relative(dir, file), bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length });
      }
    }
  };
  walk(dir);
  return sizes;
}

const sizes = servedSizes();
const total = sizes.reduce((sum, { gzip }) => sum + gzip, 0);
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
for (const { file, bytes, gzip } of sizes) console.log(`    console: ${file} ${kb(bytes)}, gzip ${kb(gzip)}`);
console.log(`    console: total gzip ${kb(total)} of ${kb(GZIP_BUDGET)} budget (${total} bytes)`);
if (total > GZIP_BUDGET) {
  console.error(`console: the served assets are ${kb(total)} gzip, over the ${kb(GZIP_BUDGET)} budget`);
  process.exit(1);
}
