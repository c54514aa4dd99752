// Network namespaces that weft's own tools create — the demo cluster, benchmarks and tests: each
// with a unique name, nothing ever in the root namespace, and all of them removed when the tool
// is done, also when it fails or is interrupted (SIGINT, SIGTERM, exit).
import { execFile, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { Kernel } from "../kernel/iproute.js";
import { processAlive } from "../util/process-alive.js";

const run = promisify(execFile);
/** Our namespaces, from just before `ip netns add` until `ip netns del` has run: the exit hook
 *  removes each, so no moment of a creation or a removal leaves one behind. */
const live = new Set<string>();
/** Removals under way, so that a second destroy() waits for the first. */
const removing = new Map<string, Promise<void>>();
let counter = 0;
let hooked = false;

/**
 * Kills what still runs in a namespace (an agent or iperf3 whose stop never came, e.g. when a test
 * worker exits mid-hook): `ip netns del` only drops the name, and such a process would keep the
 * namespace, its devices and its CPU use alive.
 */
function killInside(pids: string): void {
  const killed: number[] = [];
  for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, "SIGKILL");
      killed.push(pid);
    } catch {
      // already gone
    }
  }
  // kill() only sends: a syscall under way finishes first (a mkdir in a temp dir the exit hook
  // removes next would bring it back), so wait, 2 s at most, until each is dead (gone or a zombie).
  const sleep = new Int32Array(new SharedArrayBuffer(4));
  const deadline = performance.now() + 2_000;
  while (killed.some(running) && performance.now() < deadline) Atomics.wait(sleep, 0, 0, 5);
}

/** Whether `pid` runs (gone or a zombie, it does not). */
export function running(pid: number): boolean {
  try {
    // The state follows the command in parentheses, which may itself hold spaces or parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

function removeSync(name: string): void {
  try {
    killInside(execFileSync("ip", ["netns", "pids", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }));
    execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
  } catch {
    // already gone
  }
}

function removeAllSync(): void {
  for (const name of live) removeSync(name);
  live.clear();
}

/** Our names, `weft-<tag>-<pid>-<n>`: the pid is the maker's. */
const OURS = /^weft-.+-(\d+)-\d+$/;

/**
 * Removes the namespaces of makers that are gone, with what still runs in them: a tool killed by
 * a signal it cannot handle (SIGKILL, a native crash's SIGABRT) ran no exit hook. A maker's pid
 * that is in use again keeps its names (left, never wrongly removed). Returns the names removed.
 */
export function sweepOrphans(): string[] {
  let list: string;
  try {
    list = execFileSync("ip", ["netns", "list"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return [];
  }
  const orphans = list
    .split("\n")
    .map((line) => line.split(" ")[0])
    .filter((name) => {
      const m = OURS.exec(name);
      return m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]));
    });
  for (const name of orphans) removeSync(name);
  return orphans;
}

/** Removes our namespaces at exit, and makes SIGINT and SIGTERM exit (when no tool handles them). */
export function hookExit(): void {
  if (hooked) return;
  hooked = true;
  sweepOrphans();
  // First of the exit listeners, also when installed after them: the processes in our namespaces
  // must be gone before the temp dirs they may write into (temp-dirs.ts) are removed.
  process.prependOnceListener("exit", removeAllSync);
  for (const [sig, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.on(sig, () => {
      // A tool with its own handler (demo, bench) stops its agents first and then exits, and the
      // exit hook removes what is left; removing namespaces here would pull them from under it.
      if (process.listenerCount(sig) > 1) return;
      removeAllSync();
      process.exit(code);
    });
  }
}

/** A namespace owned by this process. */
export class Netns {
  readonly kernel: Kernel;

  private constructor(readonly name: string) {
    this.kernel = new Kernel({ netns: name });
  }

  /** Creates `weft-<tag>-<pid>-<n>` with its loopback up. */
  static async create(tag: string): Promise<Netns> {
    hookExit();
    const name = `weft-${tag}-${process.pid}-${++counter}`;
    live.add(name);
    try {
      // Synchronous: an exit or a signal handled while an `ip netns add` of ours still ran would
      // find nothing to remove yet, and the namespace would appear after the hook.
      execFileSync("ip", ["netns", "add", name], { stdio: ["ignore", "ignore", "pipe"] });
    } catch (error) {
      const e = error as { signal?: NodeJS.Signals | null; stderr?: Buffer };
      // "File exists": the name is another run's (a shared /run/netns), not ours to remove. Else
      // an `ip` interrupted by Ctrl-C may have made it halfway.
      if (!e.stderr?.toString().includes("File exists")) removeSync(name);
      live.delete(name);
      // Killed by a terminal's Ctrl-C, which reached this process too: the whole failure ran
      // before Node could run its signal handler, so a tool would report "Command failed" and not
      // the interruption. Two turns of the loop pass at least one poll of signals (one would not
      // when called from an I/O callback: the check phase comes before the next poll).
      if (e.signal) for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r));
      throw error;
    }
    const ns = new Netns(name);
    try {
      await ns.ip("link set lo up");
    } catch (error) {
      await ns.destroy();
      throw error;
    }
    return ns;
  }

  /** Runs `ip -n <ns> <args>` (args split on spaces). */
  async ip(args: string): Promise<string> {
    const { stdout } = await run("ip", ["-n", this.name, ...args.split(/\s+/)]);
    return stdout;
  }

  /** Runs a program inside the namespace and returns its stdout. */
  async exec(argv: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    const { stdout } = await run("ip", ["netns", "exec", this.name, ...argv], {
      timeout: opts.timeoutMs ?? 30_000,
      maxBuffer: 64 << 20,
    });
    return stdout;
  }

  /** argv that runs a program inside the namespace (for spawn). */
  wrap(argv: string[]): string[] {
    return ["ip", "netns", "exec", this.name, ...argv];
  }

  /** The namespace's path, for entering it (setns) from this process. */
  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** The processes running in this namespace. */
  async pids(): Promise<number[]> {
    const { stdout } = await run("ip", ["netns", "pids", this.name]);
    return stdout.split(/\s+/).filter(Boolean).map(Number);
  }

  /** Kills what runs inside and removes the namespace; a second call waits for the first. */
  destroy(): Promise<void> {
    const name = this.name;
    if (!live.has(name)) return Promise.resolve();
    let done = removing.get(name);
    if (!done) {
      done = (async () => {
        const pids = await run("ip", ["netns", "pids", name]).catch(() => ({ stdout: "" }));
        killInside(pids.stdout);
        await run("ip", ["netns", "del", name]).catch(() => undefined);
        // Only now: until `ip netns del` has run, the exit hook must still find the name.
        live.delete(name);
        removing.delete(name);
      })();
      removing.set(name, done);
    }
    return done;
  }
}

/** Joins two namespaces with a veth pair and gives each end an address. */
export async function vethPair(
  a: Netns,
  aIf: string,
  aAddr: string,
  b: Netns,
  bIf: string,
  bAddr: string,
): Promise<void> {
  await a.ip(`link add ${aIf} type veth peer name ${bIf} netns ${b.name}`);
  await a.ip(`addr add ${aAddr} dev ${aIf}`);
  await b.ip(`addr add ${bAddr} dev ${bIf}`);
  await a.ip(`link set ${aIf} up`);
  await b.ip(`link set ${bIf} up`);
}
