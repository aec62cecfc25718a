// Builds the package (dist/index.js and its type declarations), or builds and runs its tests
// (--test) in jsdom with React.
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: "inherit", cwd: here });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

await esbuild.build({
  entryPoints: [join(here, "src", "index.tsx")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2020",
  external: ["react", "react/jsx-runtime"],
  outfile: join(here, "dist", "index.js"),
  logLevel: "warning",
});
run(join(here, "node_modules", ".bin", "tsc"), ["-p", here]);

if (process.argv[2] === "--test") {
  // Inside the package, so the tests resolve jsdom from its node_modules.
  const dir = join(here, ".test-build");
  rmSync(dir, { recursive: true, force: true });
  try {
    const tests = readdirSync(join(here, "test")).filter((f) => f.endsWith(".test.tsx"));
    await esbuild.build({
      entryPoints: tests.map((f) => join(here, "test", f)),
      bundle: true,
      platform: "node",
      format: "esm",
      outdir: dir,
      outExtension: { ".js": ".mjs" },
      external: ["jsdom"],
      jsx: "automatic",
      logLevel: "warning",
      nodePaths: [join(here, "node_modules")],
    });
    // --test-force-exit: React's scheduler keeps a MessageChannel open in jsdom.
    run(process.execPath, ["--test", "--test-force-exit", ...tests.map((f) => join(dir, f.replace(/\.tsx$/, ".mjs")))]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
