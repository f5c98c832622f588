// Builds the console: TypeScript messages generated from ../proto by protoc-gen-es (through
// protoc), a type check, then one esbuild bundle with content-hashed names and an index.html
// that names them. Usage: node build.mjs [--out DIR] [--no-typecheck]
// Prints the files written and their gzipped size.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.join(here, "..", "proto");
const genDir = path.join(here, "gen");
const args = process.argv.slice(2);
let out = path.join(here, "dist");
let typecheck = true;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--out") out = path.resolve(args[++i]);
  else if (args[i] === "--no-typecheck") typecheck = false;
  else {
    console.error(`build.mjs: unknown argument '${args[i]}'`);
    process.exit(2);
  }
}

function run(cmd, argv) {
  const r = spawnSync(cmd, argv, { cwd: here, stdio: "inherit" });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} exited with status ${r.status}`);
}

function protoFiles(dir, rel = "") {
  const found = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) found.push(...protoFiles(dir, p));
    else if (e.name.endsWith(".proto")) found.push(p);
  }
  return found.sort();
}

// 1. Messages and service descriptors from proto/ (clue.v1 and google.rpc's error details).
fs.rmSync(genDir, { recursive: true, force: true });
fs.mkdirSync(genDir, { recursive: true });
const protos = protoFiles(protoDir).filter((p) => p.startsWith("clue/") || p.startsWith("google/"));
run("protoc", [
  `-I${protoDir}`,
  `--plugin=protoc-gen-es=${path.join(here, "node_modules", ".bin", "protoc-gen-es")}`,
  `--es_out=${genDir}`,
  "--es_opt=target=ts,import_extension=none",
  ...protos,
]);

// 2. The type check (esbuild strips types without checking them).
if (typecheck) run(process.execPath, [path.join(here, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", here]);

// 3. One bundle, hashed names, no source maps (nothing of the source is needed to run it).
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(path.join(out, "assets"), { recursive: true });
const result = await esbuild.build({
  entryPoints: [path.join(here, "src", "main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020"],
  outdir: path.join(out, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});
const assets = Object.keys(result.metafile.outputs).map((p) => path.basename(p));
const js = assets.find((a) => a.endsWith(".js"));
const css = assets.find((a) => a.endsWith(".css"));
if (!js || !css) throw new Error(`the bundle is missing its script or style: ${assets.join(", ")}`);

// 4. index.html: the one file without a hash (it must be fetched afresh to find the others).
// Its asset URLs are absolute: clued answers any path without an extension (/clue/17) with
// index.html, and a relative "assets/..." there would be looked for under /clue/.
const html = fs
  .readFileSync(path.join(here, "src", "index.html"), "utf8")
  .replace("%SCRIPT%", `/assets/${js}`)
  .replace("%STYLE%", `/assets/${css}`);
fs.writeFileSync(path.join(out, "index.html"), html);

let raw = 0, gz = 0;
for (const f of ["index.html", ...assets.map((a) => `assets/${a}`)]) {
  const data = fs.readFileSync(path.join(out, f));
  const z = zlib.gzipSync(data, { level: 9 }).length;
  raw += data.length;
  gz += z;
  console.log(`  ${f}  ${(data.length / 1024).toFixed(1)} kB, gzipped ${(z / 1024).toFixed(1)} kB`);
}
console.log(`console built in ${out}: ${(raw / 1024).toFixed(1)} kB, gzipped ${(gz / 1024).toFixed(1)} kB`);
