// The faults the chaos suite injects into a lab cluster, each undone by the suite afterwards:
// - loss and partitions on the underlay, as nftables rules in the switch's namespace (a bridge
//   table on br0's forward hook: `numgen random mod 100 < N drop` for loss, port-to-port drops
//   for a partition). The kernels this runs on have no netem, fq or any other qdisc that delays
//   packets (only tbf, which queues by rate, not by time), so there is no delay fault;
// - slow TCP connections from a bystander namespace on the switch, each dripping a byte now and
//   then into the gossip port;
// - a small tmpfs as a state dir, mounted in a mount namespace of its own (never this process's)
//   that goes with the lab's namespaces (also on Ctrl-C or a kill -9).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { WeftError } from "../../errors.js";
import { formatIpv4 } from "../../net/ipv4.js";
import { LAB_UNDERLAY_BASE, type LabCluster, type LabHost } from "../cluster.js";
import { Netns } from "../netns.js";

const run = promisify(execFile);

/** The switch port of a host (LabCluster names them h1, h2, ...). */
function port(h: LabHost): string {
  return `h${h.name.replace(/^host/, "")}`;
}

/** Loss and partitions on the lab switch; `apply` replaces the whole rule set at once. */
export class SwitchFaults {
  private lossPercent = 0;
  private sides?: [LabHost[], LabHost[]];

  constructor(private readonly lab: LabCluster) {}

  /** Drops `percent`% of all frames crossing the switch, in both directions (0: none). */
  async loss(percent: number): Promise<void> {
    if (!Number.isInteger(percent) || percent < 0 || percent > 100)
      throw new WeftError("LAB_CHAOS_BAD_LOSS", `loss must be a whole percentage, not ${percent}`);
    this.lossPercent = percent;
    await this.apply();
  }

  /** Cuts every frame between the two sides (each side still talks within itself). */
  async partition(a: LabHost[], b: LabHost[]): Promise<void> {
    this.sides = [a, b];
    await this.apply();
  }

  async heal(): Promise<void> {
    this.sides = undefined;
    await this.apply();
  }

  /** Whether frames between two hosts are cut now. */
  cut(x: LabHost, y: LabHost): boolean {
    if (!this.sides) return false;
    const [a, b] = this.sides;
    return (a.includes(x) && b.includes(y)) || (b.includes(x) && a.includes(y));
  }

  async clear(): Promise<void> {
    this.lossPercent = 0;
    this.sides = undefined;
    await this.apply();
  }

  private async apply(): Promise<void> {
    const rules: string[] = [];
    if (this.lossPercent > 0) rules.push(`numgen random mod 100 < ${this.lossPercent} drop`);
    if (this.sides) {
      const set = (hs: LabHost[]) => `{ ${hs.map((h) => `"${port(h)}"`).join(", ")} }`;
      const [a, b] = this.sides;
      rules.push(`iifname ${set(a)} oifname ${set(b)} drop`, `iifname ${set(b)} oifname ${set(a)} drop`);
    }
    // Declaring the table first makes the delete valid when it does not exist yet.
    const script = ["table bridge weft_chaos {}", "delete table bridge weft_chaos"];
    if (rules.length > 0) {
      script.push(
        "table bridge weft_chaos {",
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
        ...rules.map((r) => `    ${r}`),
        "  }",
        "}",
      );
    }
    await this.lab.switchNs.kernel.nft(script.join("\n") + "\n");
  }
}

/** A namespace on the lab switch that runs no agent: where misbehaving clients come from. */
export class Bystander {
  private constructor(
    readonly ns: Netns,
    readonly addr: number,
  ) {}

  static async attach(lab: LabCluster, tag: string): Promise<Bystander> {
    const ns = await Netns.create(`${tag}-by`);
    const addr = LAB_UNDERLAY_BASE + 200;
    try {
      await lab.switchNs.kernel.ipBatch([
        `link add hby type veth peer name eth0 netns ${ns.name}`,
        "link set hby master br0 up",
      ]);
      await ns.kernel.ipBatch([`addr add ${formatIpv4(addr)}/24 dev eth0`, "link set eth0 up"]);
    } catch (error) {
      await ns.destroy();
      throw error;
    }
    return new Bystander(ns, addr);
  }

  /**
   * Opens `count` TCP connections to `target:port` and writes one byte of a never-finished
   * frame on each every `intervalS`, for at most `seconds`; a connection the target closes is
   * opened again a second later (an attacker that persists, not one the first deadline ends).
   * Resolves with how many connections were open once all were tried; `stop()` (or the time
   * limit) ends them.
   */
  async slowConnections(
    target: LabHost,
    port: number,
    count: number,
    intervalS: number,
    seconds: number,
  ): Promise<SlowConnections> {
    const script = `
      const net = require("node:net");
      const socks = []; let open = 0, tried = 0, ending = false;
      // A frame announcing 1,024 bytes, sent one byte at a time: a frame that is never whole.
      const frame = Buffer.alloc(4 + 1024); frame.writeUInt32BE(1024, 0);
      const connect = (i, first) => {
        const s = net.connect({ host: ${JSON.stringify(formatIpv4(target.underlayAddr))}, port: ${port} });
        s.sent = 0;
        let counted = !first;
        const tally = (ok) => { if (counted) return; counted = true; if (ok) open++; if (++tried === ${count}) console.log("open " + open); };
        s.on("connect", () => tally(true));
        s.on("error", () => tally(false));
        s.on("close", () => { if (!ending) setTimeout(() => { if (!ending) connect(i, false); }, 1000); });
        socks[i] = s;
      };
      for (let i = 0; i < ${count}; i++) connect(i, true);
      const drip = setInterval(() => { for (const s of socks) if (!s.destroyed && !s.connecting) { s.write(frame.subarray(s.sent, s.sent + 1)); s.sent = Math.min(s.sent + 1, frame.length - 1); } }, ${intervalS * 1000});
      const end = () => { ending = true; clearInterval(drip); for (const s of socks) s.destroy(); process.exit(0); };
      setTimeout(end, ${seconds * 1000});
      process.on("SIGTERM", end);
      setInterval(() => { const alive = socks.filter((s) => !s.destroyed && s.readyState === "open").length; console.log("alive " + alive); }, 1000);
    `;
    const [cmd, ...argv] = this.ns.wrap([process.execPath, "-e", script]);
    const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "inherit"] });
    const conns = new SlowConnections(child);
    await conns.opened(15_000);
    return conns;
  }

  async destroy(): Promise<void> {
    await this.ns.destroy();
  }
}

export class SlowConnections {
  /** Connections open as last reported (once a second). */
  alive = 0;
  private openCount?: number;
  private waiting?: () => void;

  constructor(private readonly child: ChildProcess) {
    let buf = "";
    child.stdout!.on("data", (d) => {
      buf += d;
      const lines = buf.split("\n");
      buf = lines.pop()!;
      for (const l of lines) {
        const [what, n] = l.split(" ");
        if (what === "open") {
          this.openCount = Number(n);
          this.alive = Number(n);
          this.waiting?.();
        } else if (what === "alive") this.alive = Number(n);
      }
    });
  }

  opened(timeoutMs: number): Promise<number> {
    if (this.openCount !== undefined) return Promise.resolve(this.openCount);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new WeftError("LAB_CHAOS_SLOW_CONNECT", `slow connections not all tried within ${timeoutMs / 1000} s`),
          ),
        timeoutMs,
      );
      this.waiting = () => {
        clearTimeout(timer);
        resolve(this.openCount!);
      };
      this.child.once("exit", () => {
        clearTimeout(timer);
        reject(new WeftError("LAB_CHAOS_SLOW_EXITED", "the slow-connection client exited before connecting"));
      });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGKILL");
    await gone;
  }
}

/**
 * A small tmpfs for a state dir, mounted by a holder process in the mount namespace `ip netns
 * exec` gives it in one of our network namespaces (a lab host's), never in this process's: it lives as long as the
 * holder, which that namespace takes along when it goes (at close, at exit, or in the next
 * tool's sweep after a kill -9), so no mount can outlive the suite. It outlives the agents that
 * use it (a killed agent restarts onto the same state), which reach it as this process does,
 * through `path` (/proc/<holder>/root/<dir>: the holder's view of the dir).
 */
/** Bounds a mount's start: mkdir and mount take milliseconds. */
const MOUNT_LIMIT_MS = 10_000;

export class Tmpfs {
  private constructor(
    private readonly holder: ChildProcess,
    readonly path: string,
    private readonly bytes: number,
  ) {}

  /** Mounts a tmpfs of `bytes` at `dir` (created) in a holder in the network namespace `ns`. */
  static async mount(ns: Netns, dir: string, bytes: number): Promise<Tmpfs> {
    // The holder ignores SIGINT (kept across exec): it shares the suite's process group, and a
    // terminal's Ctrl-C must not end the mount while the agents on it still stop (their state dir,
    // /proc/<holder>/root/..., would go, or be a reused pid's). unmount(), Netns.destroy and the
    // orphan sweep end it with SIGKILL.
    const [cmd, ...argv] = ns.wrap([
      "sh",
      "-c",
      'mkdir -p "$1" && mount -t tmpfs -o "size=$2,mode=0700" weft-chaos "$1" && trap \'\' INT && echo mounted && exec sleep infinity',
      "sh",
      dir,
      String(bytes),
    ]);
    const holder = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    holder.stderr!.on("data", (d) => (stderr += d));
    const failed = (why: string) =>
      new WeftError(
        "LAB_CHAOS_TMPFS",
        `the tmpfs at ${dir} could not be mounted (${why}): ${stderr.trim()}; the suite needs root`,
      );
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(failed(`no answer within ${MOUNT_LIMIT_MS / 1000} s`)), MOUNT_LIMIT_MS);
        const settle = (error?: WeftError) => {
          clearTimeout(timer);
          if (error) reject(error);
          else resolve();
        };
        holder.stdout!.once("data", () => settle());
        holder.once("error", (e) => settle(failed(e.message)));
        // On close, not exit: by then all it wrote to stderr has been read.
        holder.once("close", (code) => settle(failed(`exit ${code}`)));
      });
    } catch (error) {
      holder.kill("SIGKILL");
      throw error;
    }
    return new Tmpfs(holder, `/proc/${holder.pid}/root${dir}`, bytes);
  }

  /** Fills the tmpfs to the last byte with the file `name` (dd until ENOSPC; count= bounds it
   *  should the path lead elsewhere). */
  async fill(name: string): Promise<void> {
    const count = Math.ceil(this.bytes / 4096) + 1;
    await run("dd", ["if=/dev/zero", `of=${this.path}/${name}`, "bs=4096", `count=${count}`]).catch(() => undefined); // ends with ENOSPC, as meant
  }

  /** Ends the holder, and with it the mount (its mount namespace goes with its last process). */
  async unmount(): Promise<void> {
    if (this.holder.exitCode !== null || this.holder.signalCode !== null) return;
    const gone = new Promise((r) => this.holder.once("exit", r));
    this.holder.kill("SIGKILL");
    await gone;
  }
}
