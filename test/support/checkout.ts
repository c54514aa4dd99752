// The commit this checkout's HEAD is, to compare a build's recorded commit with: the tests' build
// (global-setup.ts) is made from this checkout.
import { execFileSync } from "node:child_process";
import { projectFile } from "../../src/paths.js";

/** HEAD's full hash. */
export const checkoutHead = (): string =>
  execFileSync("git", ["rev-parse", "HEAD"], { cwd: projectFile(), encoding: "utf8" }).trim();

/** A build's commit label made here: HEAD, "-dirty" when tracked files differed from it. */
export const headLabel = (): RegExp => new RegExp(`^${checkoutHead()}(-dirty)?$`);
