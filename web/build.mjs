// Builds the console into crates/fluxgate-server/console/, which the server embeds: one
// minified JavaScript bundle, one stylesheet, the page and the icon, each with a gzip copy.
// The output is committed; CI rebuilds it and fails if it differs from the sources.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { gzipSync, constants } from "node:zlib";

const out = "../crates/fluxgate-server/console";
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { console: "src/main.tsx" },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: out,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
await build({
  entryPoints: { console: "src/style.css" },
  bundle: true,
  minify: true,
  outdir: out,
  logLevel: "warning",
});
copyFileSync("index.html", `${out}/index.html`);
copyFileSync("favicon.svg", `${out}/favicon.svg`);

let total = 0;
for (const f of ["console.js", "console.css", "index.html", "favicon.svg"]) {
  const gz = gzipSync(readFileSync(`${out}/${f}`), { level: constants.Z_BEST_COMPRESSION });
  writeFileSync(`${out}/${f}.gz`, gz);
  if (f.startsWith("console.")) total += gz.length;
  console.log(`${f}: ${gz.length} bytes gzipped`);
}
console.log(`first load (JavaScript + CSS, gzipped): ${total} bytes`);
