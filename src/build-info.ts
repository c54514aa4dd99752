// Which build of weft this is: package.json's version, which every build shares, and the git
// commit `npm run build:info` recorded in dist/build-info.json when dist/ was built (not in git;
// a packed or installed package, or an image, has no .git to ask later). `weft --version`,
// /metrics' weft_build_info and `weft status` show it, so that nodes of a rolling upgrade can be
// told apart.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { BUILD_ID_FILE, type BuildId } from "./build-id.js";
import { writeFileAtomicSync } from "./fs/atomic-write.js";
import { projectFile, projectRoot } from "./paths.js";

export interface BuildCommit {
  /** The full commit hash, or "unknown". */
  commit: string;
  /** The tree had changes to tracked files besides the commit. */
  dirty: boolean;
}

const RECORD = () => projectFile("dist", "build-info.json");
export const UNKNOWN_COMMIT: BuildCommit = { commit: "unknown", dirty: false };

/** The commit dist/ was built from, as recorded; undefined for a build without the record. */
export function recordedCommit(): BuildCommit | undefined {
  try {
    const r = JSON.parse(readFileSync(RECORD(), "utf8"));
    if (typeof r.commit === "string" && typeof r.dirty === "boolean") return { commit: r.commit, dirty: r.dirty };
  } catch {}
  return undefined;
}

/**
 * HEAD of weft's own checkout and whether tracked files differ from it; undefined outside one. A
 * package installed inside another repository (node_modules/weft) is not its checkout: asking git
 * there would answer that repository's commit.
 */
export function gitCommit(): BuildCommit | undefined {
  const git = (args: string[]) =>
    execFileSync("git", args, { cwd: projectRoot(), encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  try {
    if (realpathSync(git(["rev-parse", "--show-toplevel"])) !== realpathSync(projectRoot())) return undefined;
    return { commit: git(["rev-parse", "HEAD"]), dirty: git(["status", "--porcelain", "--untracked-files=no"]) !== "" };
  } catch {
    return undefined;
  }
}

/** "<commit>", or "<commit>-dirty" for a tree with changes (as `git describe --dirty` marks it). */
export function commitLabel(c: BuildCommit): string {
  return c.dirty ? `${c.commit}-dirty` : c.commit;
}

/**
 * Writes dist/build-info.json: the checkout's commit, else WEFT_COMMIT's (an image build, whose
 * context has no .git, is given it: "<commit>" or "<commit>-dirty"), else "unknown".
 */
export function recordBuild(): BuildCommit {
  const given = process.env.WEFT_COMMIT?.trim();
  const c =
    gitCommit() ??
    (given ? { commit: given.replace(/-dirty$/, ""), dirty: given.endsWith("-dirty") } : undefined) ??
    UNKNOWN_COMMIT;
  writeFileAtomicSync(RECORD(), JSON.stringify(c) + "\n");
  return c;
}

/**
 * Writes dist/build-id.json (see build-id.ts): the id is a hash of every .js file under dist/src,
 * by path and content, and of build/weft.wasm, so the same sources give the same id and any change
 * to either another; `wasm` is the module's own hash, which hotPathModule() checks.
 */
export function recordBuildId(): BuildId {
  const dist = projectFile("dist", "src");
  const hash = createHash("sha256");
  const files = readdirSync(dist, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".js"))
    .sort();
  for (const f of files)
    hash
      .update(`${f}\0`)
      .update(readFileSync(join(dist, f)))
      .update("\0");
  // build:wasm runs before build:ts (npm run build, the Containerfile), and after it when dist/
  // exists. Without the module ("none") the hot path cannot start, nor take one installed later.
  let wasm = "none";
  if (existsSync(projectFile("build", "weft.wasm")))
    wasm = createHash("sha256")
      .update(readFileSync(projectFile("build", "weft.wasm")))
      .digest("hex");
  const b = { id: hash.update(`weft.wasm\0${wasm}`).digest("hex").slice(0, 16), wasm };
  writeFileAtomicSync(BUILD_ID_FILE(), JSON.stringify(b) + "\n");
  return b;
}

let info: (BuildCommit & { version: string }) | undefined;

/** This build's version and recorded commit ("unknown" without a record). */
export function buildInfo(): BuildCommit & { version: string } {
  info ??= {
    version: (JSON.parse(readFileSync(projectFile("package.json"), "utf8")) as { version: string }).version,
    ...(recordedCommit() ?? UNKNOWN_COMMIT),
  };
  return info;
}
