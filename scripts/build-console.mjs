// Builds the web console (litellm_plugins/console/src -> litellm_plugins/console/static).
// Run by scripts/dev-env.sh and the Dockerfile's build stage; never at runtime. The output is
// git-ignored and shipped as package data: hashed file names (cacheable for a year), one JS bundle
// (our code + Chart.js, tree-shaken) and one stylesheet, and an index.html that names them.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(root, "litellm_plugins/console/src");
const out = join(root, "litellm_plugins/console/static");

const bundle = await build({
  entryPoints: [join(src, "app.js"), join(src, "app.css")],
  bundle: true, minify: true, format: "esm", target: "es2020", write: false, legalComments: "none",
  define: { "process.env.NODE_ENV": '"production"' }, outdir: out, logLevel: "warning",
});

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const names = {};
for (const file of bundle.outputFiles) {
  const ext = file.path.endsWith(".css") ? "css" : "js";
  const hash = createHash("sha256").update(file.contents).digest("hex").slice(0, 16);
  const name = `app-${hash}.${ext}`;
  writeFileSync(join(out, name), file.contents);
  names[ext] = name;
}
const html = readFileSync(join(src, "index.html"), "utf8")
  .replace("{{app.js}}", `assets/${names.js}`).replace("{{app.css}}", `assets/${names.css}`);
writeFileSync(join(out, "index.html"), html);
writeFileSync(join(out, "manifest.json"), JSON.stringify({ assets: [names.js, names.css] }, null, 1) + "\n");
console.log(`[build-console] ${readdirSync(out).join(" ")}`);
