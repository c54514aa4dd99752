// A PATH lacking some programs, for seeing what a run does on a machine without them: a directory
// of links to every other program of this process's PATH (the first of each name, as a lookup finds).
import { mkdirSync, readdirSync, symlinkSync } from "node:fs";
import { delimiter, join } from "node:path";

/** Fills `dir` (created) with the links and returns it, for PATH. */
export function pathWithout(dir: string, missing: string[]): string {
  mkdirSync(dir, { recursive: true });
  const seen = new Set(missing);
  for (const d of (process.env.PATH ?? "").split(delimiter).filter(Boolean)) {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue; // a PATH entry that does not exist
    }
    for (const n of names.filter((x) => !seen.has(x))) {
      seen.add(n);
      symlinkSync(join(d, n), join(dir, n));
    }
  }
  return dir;
}
