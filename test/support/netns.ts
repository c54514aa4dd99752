// Network namespaces for tests: unique names, nothing in the root namespace, removed afterwards —
// also when a test fails or the run is interrupted.
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * Root and the kernel's netns support are needed for kernel tests. Outside CI a machine without
 * them skips those tests; in CI (CI=true) a skip would hide a failure, so it throws instead.
 */
export function canUseNetns(): boolean {
  const ok = process.getuid?.() === 0 && hasIp();
  if (!ok && process.env.CI === "true") {
    throw new Error("kernel tests need root and iproute2, and CI=true forbids skipping them");
  }
  return ok;
}

function hasIp(): boolean {
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const live = new Set<string>();
let counter = 0;

function removeAllSync(): void {
  for (const name of live) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
  live.clear();
}

let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once("exit", removeAllSync);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      removeAllSync();
      process.kill(process.pid, sig);
    });
  }
}

/** A namespace the test owns. `sh` runs a command inside it; `destroy` removes it and its devices. */
export class Netns {
  private constructor(readonly name: string) {}

  static async create(tag: string): Promise<Netns> {
    hookExit();
    const name = `weft-t-${tag}-${process.pid}-${++counter}`;
    await run("ip", ["netns", "add", name]);
    live.add(name);
    const ns = new Netns(name);
    await ns.ip("link set lo up");
    return ns;
  }

  /** Runs `ip -n <ns> <args>`. */
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

  /** argv prefix that runs a program inside the namespace (for spawn). */
  wrap(argv: string[]): string[] {
    return ["ip", "netns", "exec", this.name, ...argv];
  }

  async destroy(): Promise<void> {
    if (!live.delete(this.name)) return;
    await run("ip", ["netns", "del", this.name]).catch(() => undefined);
  }
}

/** Joins two namespaces with a veth pair and gives each end an address (198.18.0.0/24 only). */
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
