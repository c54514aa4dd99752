// What ships (src/, compiled into dist/src) must not reach into the development tree: benchmarks
// (bench/) build on src/bench, never the reverse, and test references stay in test/.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

describe("layering", () => {
  it("src/ imports nothing from bench/ or test/", () => {
    const src = projectFile("src");
    const outside: string[] = [];
    for (const file of sources(src)) {
      for (const m of readFileSync(file, "utf8").matchAll(
        /\bfrom\s+"(\.{1,2}\/[^"]+)"|\bimport\(\s*"(\.{1,2}\/[^"]+)"\s*\)/g,
      )) {
        const target = relative(projectFile(), resolve(file, "..", m[1] ?? m[2]));
        if (!target.startsWith("src/")) outside.push(`${relative(projectFile(), file)} -> ${target}`);
      }
    }
    expect(outside).toEqual([]);
  });
});
