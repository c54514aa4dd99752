// The built `weft` CLI run as a user runs it (bench, demo), each run with a TMPDIR of its own, and
// what a run may have left behind afterwards, also after a Ctrl-C at the worst moment; the
// processes running now, from /proc.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { projectFile } from "../../src/paths.js";

export interface CliRun {
  pid: number;
  code: number | null;
  stdout: string;
  stderr: string;
  /** TMPDIR of the run: LabAgents puts the agents' work dirs (and so their --state-dir) there. */
  agentTmp: string;
}

/**
 * Runs `weft args` with TMPDIR `<work>/<name>-tmp` (and `env` over this process's environment);
 * `onStderr` may act on progress lines (sent as plain lines off a TTY). `cli` is this checkout's
 * built CLI unless an installed package's is given.
 */
export function runCli(
  work: string,
  name: string,
  args: string[],
  onStderr?: (text: string, pid: number) => void,
  env: NodeJS.ProcessEnv = {},
  cli = projectFile("dist", "src", "cli", "main.js"),
): Promise<CliRun> {
  const agentTmp = join(work, `${name}-tmp`);
  rmSync(agentTmp, { recursive: true, force: true });
  mkdirSync(agentTmp);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, ...env, TMPDIR: agentTmp },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => {
      stderr += d;
      onStderr?.(stderr, child.pid!);
    });
    child.on("error", reject);
    // "close", not "exit": only then has all of its output arrived.
    child.on("close", (code) => resolve({ pid: child.pid!, code, stdout, stderr, agentTmp }));
  });
}

/** What a run may have left: namespaces named with its pid, processes using its agents' dirs, those dirs. */
export function leftovers(r: CliRun): string[] {
  const left: string[] = [];
  for (const line of execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n")) {
    if (line.includes(`-${r.pid}-`)) left.push(`namespace ${line.trim()}`);
  }
  for (const pid of pids()) {
    const cmdline = procFile(pid, "cmdline")?.replace(/\0/g, " ");
    if (cmdline?.includes(r.agentTmp)) left.push(`process ${pid}: ${cmdline}`);
  }
  for (const d of readdirSync(r.agentTmp)) left.push(`agent work dir ${d}`);
  return left;
}

/** The pids of the processes running now. */
export function pids(): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

/** /proc/<pid>/<file> (cmdline and environ: NUL-separated), or undefined if the process exited meanwhile. */
export function procFile(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch {
    return undefined;
  }
}

/** What SIGINT_AT_TEMP_DIR preloads: node:fs's mkdtempSync, wrapped, for the modules that import it too. */
const SIGINT_AT_TEMP_DIR_MODULE = `import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
const make = fs.mkdtempSync;
fs.mkdtempSync = (prefix, ...rest) => {
  const dir = make(prefix, ...rest);
  if (/(^|\\/)weft-[^/]*$/.test(prefix)) process.kill(process.pid, "SIGINT");
  return dir;
};
syncBuiltinESMExports();`;

/**
 * Node.js flags that make a run Ctrl-C itself (SIGINT) the moment it has made a temp dir `weft-*`:
 * before anything handles the signal, it dies of it at once and leaves the dir.
 */
export const SIGINT_AT_TEMP_DIR = [`--import=data:text/javascript,${encodeURIComponent(SIGINT_AT_TEMP_DIR_MODULE)}`];
