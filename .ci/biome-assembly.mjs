// Biome for the AssemblyScript in assembly/. Biome's TypeScript parser refuses decorators on functions, which
// AssemblyScript uses (`@inline function`), so this copies assembly/ to a temporary directory with each such
// decorator turned into a comment, runs Biome there with the project's biome.jsonc, and in write mode copies the
// formatted files back with the decorators restored. Diagnostics show the masked line (`/* @inline */ function`).
//   node .ci/biome-assembly.mjs check   format check and lint (what `npm run lint` runs)
//   node .ci/biome-assembly.mjs write   format in place (what `npm run format` runs)
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const mode = process.argv[2];
if (mode !== "check" && mode !== "write") {
  console.error("usage: node .ci/biome-assembly.mjs check|write");
  process.exit(2);
}

// A decorator at the start of a line, before a function (AssemblyScript's @inline, @global, @external …).
const DECORATOR = /^@(\w+) ((?:export )?function )/gm;
const MASKED = /^\/\* @(\w+) \*\/ ((?:export )?function )/gm;
const mask = (text) => text.replace(DECORATOR, "/* @$1 */ $2");
const unmask = (text) => text.replace(MASKED, "@$1 $2");

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sources(path);
    return e.name.endsWith(".ts") ? [path] : [];
  });
}

const files = sources(join(root, "assembly")).map((path) => relative(root, path));
const work = mkdtempSync(join(tmpdir(), "weft-biome-assembly-"));
let status = 1;
try {
  for (const file of files) {
    const text = readFileSync(join(root, file), "utf8");
    if (unmask(mask(text)) !== text) throw new Error(`${file}: masking decorators is not reversible here`);
    mkdirSync(join(work, dirname(file)), { recursive: true });
    writeFileSync(join(work, file), mask(text));
  }
  // The project's configuration, applied to assembly/ only, outside any git checkout.
  cpSync(join(root, "biome.jsonc"), join(work, "project.jsonc"));
  writeFileSync(
    join(work, "biome.jsonc"),
    JSON.stringify({
      extends: ["./project.jsonc"],
      vcs: { enabled: false },
      files: { includes: ["assembly/**/*.ts"] },
    }),
  );
  const biome = join(root, "node_modules", ".bin", "biome");
  const run = (...args) => spawnSync(biome, [...args, "assembly"], { cwd: work, stdio: "inherit" }).status ?? 1;
  // Formatting twice, as `npm run format` does, since one pass is not always stable (biome.jsonc).
  if (mode === "check") status = run("check", "--error-on-warnings");
  else {
    status = run("format", "--write");
    if (status === 0) status = run("format", "--write");
  }
  if (mode === "write" && status === 0) {
    for (const file of files) {
      const formatted = unmask(readFileSync(join(work, file), "utf8"));
      if (formatted !== readFileSync(join(root, file), "utf8")) writeFileSync(join(root, file), formatted);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(status);
