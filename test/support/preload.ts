// LD_PRELOAD shims for tests (test/kernel/fixtures/*.c), which make libc calls fail the way the
// kernel would where this kernel cannot be made to.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const FIXTURES = fileURLToPath(new URL("../kernel/fixtures/", import.meta.url));

/** Compiles fixture `name`.c into `dir`; returns the shared object's path, for LD_PRELOAD. */
export function buildPreload(name: string, dir: string): string {
  const so = join(dir, `${name}.so`);
  execFileSync("cc", ["-shared", "-fPIC", "-o", so, join(FIXTURES, `${name}.c`), "-ldl"]);
  return so;
}
