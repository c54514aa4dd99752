// A dataplane in a process of its own (test/kernel/fixtures/dataplane-host.mjs), run from a copy of
// weft that a test changes under it, as an install under the running agent would.
import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { LabHost } from "../../src/lab/cluster.js";
import { projectFile } from "../../src/paths.js";
import { until } from "../io/until.js";
import { FIXTURES } from "./preload.js";

export interface CopiedDataplane {
  /** The copy's root. */
  dir: string;
  child: ChildProcess;
  /** The child's stdout lines ("ready", "failed <code>", "killed <n>", counters). */
  out: string[];
  stderr(): string;
  /** The child's counters, asked for on stdin. */
  counters(): Promise<{ workersDown: number; workerRestarts: number }>;
  /** How the child exited, once it has. */
  exited(): { code: number | null } | undefined;
  /** The child's log lines whose err has this code. */
  logged(code: string): Array<{ level: number; msg: string; err: { code: string; message: string } }>;
  /**
   * Has the child kill its workers and waits for the dataplane to report itself failed: its
   * "failed <code>" lines. Throws if the process exited instead.
   */
  killUntilFailed(): Promise<string[]>;
  /** Has the child stop the dataplane and exit; how it exited. */
  stop(): Promise<{ code: number | null }>;
  /** Kills the child if it runs and removes the copy. */
  close(): void;
}

/**
 * Starts dataplane-host.mjs with `args` (its JSON argument) in `host`'s namespace from a copy of
 * weft in which `copied` (dist/ at least: modules resolve through symlinks to their real path,
 * which would be the project's own) are copied and the rest linked; returns once it is ready.
 */
export async function startCopiedDataplane(
  host: LabHost,
  copied: Array<"dist" | "build">,
  args: object,
): Promise<CopiedDataplane> {
  const dir = mkdtempSync(join(tmpdir(), "weft-copy-"));
  for (const d of [...copied, "package.json"]) cpSync(projectFile(d), join(dir, d), { recursive: true });
  for (const d of ["node_modules", "native", "build"].filter((d) => !copied.includes(d as "build")))
    symlinkSync(projectFile(d), join(dir, d));
  const fixture = join(dir, "test", "kernel", "fixtures", "dataplane-host.mjs");
  mkdirSync(join(dir, "test", "kernel", "fixtures"), { recursive: true });
  cpSync(join(FIXTURES, "dataplane-host.mjs"), fixture);
  const [cmd, ...argv] = host.ns.wrap([process.execPath, fixture, JSON.stringify(args)]);
  const child = spawn(cmd, argv, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  const out: string[] = [];
  child.stderr!.on("data", (d) => (stderr += d));
  createInterface({ input: child.stdout! }).on("line", (l) => out.push(l));
  const dp: CopiedDataplane = {
    dir,
    child,
    out,
    stderr: () => stderr,
    counters: async () => {
      const from = out.length;
      child.stdin!.write("counters\n");
      return JSON.parse(await until("counters", () => out.slice(from).find((l) => l.startsWith("{")), 5000));
    },
    exited: () => (child.exitCode !== null || child.signalCode !== null ? { code: child.exitCode } : undefined),
    logged: (code) =>
      stderr
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l))
        .filter((l) => l.err?.code === code),
    killUntilFailed: async () => {
      const failed = () => out.filter((l) => l.startsWith("failed "));
      child.stdin!.write("kill\n");
      await until(
        "the dataplane to report itself failed",
        () => (failed().length > 0 || dp.exited() ? true : undefined),
        15_000,
      );
      if (dp.exited()) throw new Error(`the process exited; its stderr:\n${stderr}`);
      return failed();
    },
    stop: () => {
      child.stdin!.write("stop\n");
      return until("stop() to return and the process to exit", dp.exited, 15_000);
    },
    close: () => {
      if (child.exitCode === null) child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await until("the dataplane to start", () => (out.includes("ready") ? true : undefined), 15_000);
  } catch (err) {
    dp.close();
    throw new Error(`${(err as Error).message}; its stderr:\n${stderr}`);
  }
  return dp;
}
