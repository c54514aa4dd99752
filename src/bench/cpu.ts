// CPU accounting from /proc, so a benchmark can say what moving a gigabyte cost and not only how
// fast it went: the agents' own processes (/proc/<pid>/stat) and the machine's kernel time
// (/proc/stat), both as deltas over one workload run.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { WeftError } from "../errors.js";

/** Clock ticks per second of /proc/<pid>/stat and /proc/stat (USER_HZ, 100 on every usual kernel). */
const TICKS = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface ProcessCpu {
  /** Seconds in user mode: the agent's JavaScript and WebAssembly, all its threads. */
  user: number;
  /** Seconds in the kernel on the process's behalf: its syscalls (TUN and socket I/O). */
  system: number;
}

/**
 * utime + stime of a process, plus cutime + cstime of the children it waited for (the `ip` and
 * `nft` commands an agent runs), all threads included. The fields follow the command name, which
 * may hold spaces and parentheses, so they are counted from the last ")".
 */
export function processCpu(pid: number): ProcessCpu {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (cause) {
    throw new WeftError("BENCH_PROCESS_GONE", `process ${pid} has no /proc entry: it exited during the benchmark`, {
      cause,
    });
  }
  const f = text
    .slice(text.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
  // f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14..17.
  return { user: (f[11] + f[13]) / TICKS, system: (f[12] + f[14]) / TICKS };
}

export interface MachineCpu {
  /** user + nice: every process's own code, on every core. */
  user: number;
  /** system: syscalls of every process. */
  system: number;
  /** irq + softirq: packet processing that runs outside any process's syscall (NAPI, veth, vxlan). */
  interrupts: number;
}

/** The machine-wide counters of /proc/stat's first line, in seconds summed over all cores. */
export function machineCpu(): MachineCpu {
  const [, user, nice, system, , , irq, softirq] = readFileSync("/proc/stat", "utf8")
    .split("\n")[0]
    .trim()
    .split(/\s+/)
    .map(Number);
  return { user: (user + nice) / TICKS, system: system / TICKS, interrupts: (irq + softirq) / TICKS };
}

/** What one workload run cost, as deltas (seconds). */
export interface CpuDelta {
  agentsUser: number;
  agentsSystem: number;
  machineUser: number;
  machineSystem: number;
  machineInterrupts: number;
  wallSeconds: number;
}

/**
 * Measures `run` against the given agent processes (each with the children it waited for: its
 * own `ip` and `nft`) and the whole machine.
 */
export function measureCpu<T>(pids: number[], run: () => Promise<T>): Promise<{ result: T; cpu: CpuDelta }> {
  return measure(
    () =>
      pids
        .map(processCpu)
        .reduce((a, b) => ({ user: a.user + b.user, system: a.system + b.system }), { user: 0, system: 0 }),
    run,
  );
}

/**
 * Measures `run` against this process, which runs the dataplanes itself (bench:e2e,
 * bench:profile), and the whole machine. Its own threads only: the children it reaps (iperf3,
 * perf) are not its dataplanes' cost, and processCpu's cutime would count a child whenever it
 * happens to be reaped, also in the next run's window.
 */
export function measureOwnCpu<T>(run: () => Promise<T>): Promise<{ result: T; cpu: CpuDelta }> {
  return measure(() => {
    const u = process.cpuUsage(); // getrusage(RUSAGE_SELF): every thread, no children; µs
    return { user: u.user / 1e6, system: u.system / 1e6 };
  }, run);
}

async function measure<T>(own: () => ProcessCpu, run: () => Promise<T>): Promise<{ result: T; cpu: CpuDelta }> {
  const a0 = own();
  const m0 = machineCpu();
  const t0 = process.hrtime.bigint();
  const result = await run();
  const t1 = process.hrtime.bigint();
  const a1 = own();
  const m1 = machineCpu();
  return {
    result,
    cpu: {
      agentsUser: a1.user - a0.user,
      agentsSystem: a1.system - a0.system,
      machineUser: m1.user - m0.user,
      machineSystem: m1.system - m0.system,
      machineInterrupts: m1.interrupts - m0.interrupts,
      wallSeconds: Number(t1 - t0) / 1e9,
    },
  };
}

/**
 * CPU seconds per gigabyte (10^9 bytes) of one run, in three views that add up without counting
 * anything twice: `agents` (the agents' user + system time: what a userspace backend costs in
 * its own process), `kernel` (the machine's system + irq + softirq time: the kernel datapath,
 * including the agents' syscalls and iperf3's), and `total` = agents' user time + kernel.
 * Machine-wide counters also see every other process on the machine, so runs on a busy machine
 * are noisy.
 */
export function cpuPerGigabyte(d: CpuDelta, bytes: number): { agents: number; kernel: number; total: number } {
  const kernel = d.machineSystem + d.machineInterrupts;
  return {
    agents: perGigabyte(d.agentsUser + d.agentsSystem, bytes),
    kernel: perGigabyte(kernel, bytes),
    total: perGigabyte(d.agentsUser + kernel, bytes),
  };
}

/** CPU seconds per gigabyte: `seconds` over `bytes` received, in 10^9 bytes. The one unit of every CPU-per-GB figure. */
export function perGigabyte(seconds: number, bytes: number): number {
  return seconds / (bytes / 1e9);
}
