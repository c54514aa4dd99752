// Where the project's built artifacts are, whether this code runs from src/ (tests) or dist/, and
// the one path the agent and the CNI plugin must agree on.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the agent writes subnet.env and the CNI plugin reads it, unless told otherwise: flannel's. */
export const DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env";

let root: string | undefined;

/** The directory holding weft's package.json. */
export function projectRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "weft") return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error("weft's package.json not found above " + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export function projectFile(...parts: string[]): string {
  return join(projectRoot(), ...parts);
}
