// Builds embed.js (node build.mjs), checks that the committed dist/embed.js is what the
// sources build to (--check), or type-checks and runs the unit tests (--test).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
const out = join(here, "dist", "embed.js");
const options = {
  entryPoints: [join(here, "src", "embed.ts")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome90", "firefox90", "safari15"],
  charset: "utf8",
  legalComments: "none",
  banner: { js: "/* Xin web widget (embed.js), Apache-2.0 */" },
  logLevel: "warning",
};

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: "inherit", cwd: here });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const mode = process.argv[2];
if (mode === "--check") {
  const r = await esbuild.build({ ...options, write: false, outfile: out });
  const built = r.outputFiles[0].contents;
  let committed = Buffer.alloc(0);
  try {
    committed = readFileSync(out);
  } catch {}
  if (Buffer.compare(Buffer.from(built), committed) !== 0) {
    console.error(`widget/dist/embed.js is stale: it is not what widget/src builds to; run 'make widget' and commit it`);
    process.exit(1);
  }
  console.log(`widget/dist/embed.js is up to date (${committed.length} bytes)`);
} else if (mode === "--test") {
  run(join(here, "node_modules", ".bin", "tsc"), ["-p", here]);
  const dir = mkdtempSync(join(tmpdir(), "xin-widget-test-"));
  try {
    const tests = readdirSync(join(here, "test")).filter((f) => f.endsWith(".test.ts"));
    await esbuild.build({
      entryPoints: tests.map((f) => join(here, "test", f)),
      bundle: true,
      platform: "node",
      format: "esm",
      outdir: dir,
      outExtension: { ".js": ".mjs" },
      logLevel: "warning",
    });
    run(process.execPath, ["--test", ...tests.map((f) => join(dir, f.replace(/\.ts$/, ".mjs")))]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else {
  await esbuild.build({ ...options, outfile: out });
  console.log(`built ${out} (${readFileSync(out).length} bytes)`);
}
