// `npm run bench:profile` (root, needs `perf`): where the machine's cycles go while one TCP stream
// crosses a dataplane, pod to pod, as `bench:e2e` sets it up. `perf record -a -g` samples every
// core during the middle of an iperf3 run, `perf stat` counts the syscalls, and each sample is put
// in one category by its call stack (categories.ts): the Wasm hot path, each kernel path the
// workers enter (TUN read and write, UDP send and receive; their copies apart), JS and N-API glue,
// iperf3, softirq on no process of ours, other processes (told apart by pid), idle. Figures are
// per GB the server pod received (headers included), so setups compare; the busiest Wasm functions
// are named (`--help`: the options).
// Runs under `node --perf-basic-prof` (the npm script does it), so perf can name JIT frames.
import { execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { Command, Option } from "commander";
import { DEFAULT_WORKERS_RULE, defaultWorkers } from "../../src/dataplane/defaults.js";
import { cpuPerGigabyte, measureOwnCpu, perGigabyte, type CpuDelta } from "../../src/bench/cpu.js";
import { projectFile } from "../../src/paths.js";
import { hookExit } from "../../src/lab/netns.js";
import { makeTempDir, removeTempDir } from "../../src/lab/temp-dirs.js";
import { iperf } from "../../src/lab/traffic.js";
import { numberValue, wholeNumber } from "../cli-options.js";
import { destroySetup, kernelVxlan, userspace, type Setup } from "../e2e/setups.js";
import { categorize, type Profile } from "./categories.js";

const SETUPS = ["wasm-vxlan", "udp", "kernel-vxlan"];
const program = new Command("bench:profile")
  .description(
    "where the machine's CPU goes while one TCP stream crosses a dataplane pod to pod, by perf samples, per GB moved (root, perf)",
  )
  .addOption(new Option("--setup <name>", "the dataplane").choices(SETUPS).default("wasm-vxlan"))
  .addOption(
    new Option("--offloads <on|off>", "userspace dataplane's segmentation offloads")
      .choices(["on", "off"])
      .default("on"),
  )
  .addOption(
    new Option("--workers <n>", "userspace dataplane workers")
      .argParser(wholeNumber(1))
      .default(defaultWorkers(), `the dataplane's: ${DEFAULT_WORKERS_RULE}`),
  )
  .option("--seconds <s>", "seconds sampled", numberValue({ min: 1 }), 6)
  .option("--keep <dir>", "keep perf.data in <dir> (default: a temporary directory, removed)")
  .parse();
const args = program.opts<{ setup: string; offloads: "on" | "off"; workers: number; seconds: number; keep?: string }>();
const seconds = args.seconds;
/** Samples per second and core: perf record -F, with cpu-clock so that idle cores are sampled too. */
const SAMPLE_HZ = 999;
const SYSCALLS = ["readv", "writev", "sendmmsg", "recvmmsg", "poll", "read", "write"];
/** iperf3 runs this long before and after the sampled window, so the window sees a steady stream. */
const MARGIN_S = 3;

function run(cmd: string, argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d));
    p.stderr.on("data", (d: Buffer) => (out += d));
    p.on("error", reject);
    p.on("exit", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}: ${out.slice(-500)}`)),
    );
  });
}

/**
 * Bytes received so far by the server pod's interfaces: what crossed the dataplane in the window,
 * headers included (iperf3's own count covers its whole run, not the sampled window).
 */
function receivedBytes(s: Setup): number {
  const links = JSON.parse(
    execFileSync("ip", ["-n", s.server.ns.name, "-s", "-j", "link", "show"], { encoding: "utf8" }),
  ) as Array<{ ifname: string; stats64?: { rx: { bytes: number } } }>;
  return links.filter((l) => l.ifname !== "lo").reduce((n, l) => n + (l.stats64?.rx.bytes ?? 0), 0);
}

/** The processes in a network namespace (`ip netns pids`). */
function namespacePids(ns: string): number[] {
  return execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8" }).split(/\s+/).filter(Boolean).map(Number);
}

/** Names of the Wasm functions by index, from the release build's text format (no imported functions). */
function wasmFunctionNames(): string[] {
  const wat = readFileSync(projectFile("build", "weft.wat"), "utf8");
  return [...wat.matchAll(/^ \(func \$(\S+)/gm)].map((m) => m[1].replace(/^assembly\//, ""));
}

function print(
  p: Profile,
  bytes: number,
  cpu: CpuDelta,
  setup: string,
  gbits: number,
  syscalls: Map<string, number>,
): void {
  const coreSeconds = p.total / p.rate;
  const perGB = cpuPerGigabyte(cpu, bytes);
  console.log(
    `\n${setup}: ${gbits.toFixed(2)} Gbit/s over the sampled ${seconds} s (${(bytes / 1e9).toFixed(2)} GB received by the server pod), ${p.total} samples of ${cpus().length} cores`,
  );
  console.log(
    `CPU s/GB in weft bench's three views (src/bench/cpu.ts; agents: this process, which runs the dataplanes), per GB the server pod received with headers, while perf samples (near, not equal to weft bench's figures, which divide by iperf3's bytes without perf): total ${perGB.total.toFixed(3)}, agents ${perGB.agents.toFixed(3)}, kernel ${perGB.kernel.toFixed(3)}`,
  );
  console.log(
    "where every core's time went, by perf samples (CPU s/GB: the category's sampled seconds per GB, iperf3 and idle included):",
  );
  console.log(`${"category".padEnd(52)} ${"% of machine".padStart(12)} ${"CPU s/GB".padStart(9)}`);
  for (const [name, n] of p.categories) {
    console.log(
      `${name.padEnd(52)} ${((100 * n) / p.total).toFixed(1).padStart(12)} ${perGigabyte(
        (n / p.total) * coreSeconds,
        bytes,
      )
        .toFixed(3)
        .padStart(9)}`,
    );
  }
  // Other processes' work (a shared machine) and idle time are not the path's cost.
  const path = [...p.categories].filter(([name]) => name !== "idle" && name !== "other processes");
  const pathSamples = path.reduce((n, [, k]) => n + k, 0);
  console.log(
    `the path's own (every category but idle and other processes): ${((100 * pathSamples) / p.total).toFixed(1)}% of the machine, ${perGigabyte(
      (pathSamples / p.total) * coreSeconds,
      bytes,
    ).toFixed(3)} CPU s/GB`,
  );
  if (p.wasm.size > 0) {
    console.log("\nWasm functions (self time, % of machine)");
    for (const [name, n] of [...p.wasm].sort((a, b) => b[1] - a[1]).slice(0, 8))
      console.log(`  ${((100 * n) / p.total).toFixed(1).padStart(5)}  ${name}`);
  }
  console.log("\nsyscalls per GB (whole machine)");
  for (const [name, n] of syscalls)
    console.log(
      `  ${name.padEnd(10)} ${Math.round(n / (bytes / 1e9))
        .toString()
        .padStart(8)}`,
    );
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error("bench:profile builds network namespaces and runs perf: run it as root");
  try {
    execFileSync("perf", ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error("perf is not installed: apt-get install linux-perf");
  }
  // The namespaces' hook before the temp dir: Ctrl-C before the setup's first namespace found no
  // handler, killed the process without 'exit' and left the dir.
  hookExit();
  const dir = args.keep ?? makeTempDir("weft-profile-");
  let setup: Setup | undefined;
  try {
    setup =
      args.setup === "kernel-vxlan"
        ? await kernelVxlan()
        : await userspace(args.setup === "wasm-vxlan" ? "vxlan" : "udp", args.offloads === "on", args.workers);
    const s = setup;
    const traffic = iperf(s.server, s.client, { seconds: seconds + 2 * MARGIN_S, streams: 1 });
    let sampled: [string, string, number, CpuDelta, Set<number>];
    try {
      await new Promise((r) => setTimeout(r, MARGIN_S * 1000));
      const data = join(dir, "perf.data");
      const events = SYSCALLS.map((c) => `syscalls:sys_enter_${c}`).join(",");
      const before = receivedBytes(s);
      const perf = Promise.all([
        run("perf", [
          "record",
          "-a",
          "-g",
          "-e",
          "cpu-clock",
          "-F",
          String(SAMPLE_HZ),
          "-o",
          data,
          "--",
          "sleep",
          String(seconds),
        ]),
        run("perf", ["stat", "-a", "-x", ",", "-e", events, "--", "sleep", String(seconds)]),
      ]);
      perf.catch(() => undefined);
      // This process's own threads (the dataplanes), not its children: perf's cost (sampling every
      // core with call stacks) and iperf3's are not the dataplane's.
      const { cpu } = await measureOwnCpu(() => new Promise((r) => setTimeout(r, seconds * 1000)));
      const bytes = receivedBytes(s) - before;
      // Taken while the stream still runs (MARGIN_S after the window): the setup's iperf3 processes.
      const iperf3 = new Set([s.client, s.server].flatMap((p) => namespacePids(p.ns.name)));
      const [, stat] = await perf;
      sampled = [data, stat, bytes, cpu, iperf3];
    } finally {
      await Promise.allSettled([traffic]); // never leave iperf3 running into the teardown
    }
    const [data, stat, bytes, cpu, iperf3] = sampled;
    await traffic;
    const gbits = (bytes * 8) / seconds / 1e9;
    const syscalls = new Map<string, number>();
    for (const line of stat.split("\n")) {
      const [count, , event] = line.split(",");
      const m = /sys_enter_(\w+)/.exec(event ?? "");
      if (m) syscalls.set(m[1], Number(count));
    }
    const script = execFileSync("perf", ["script", "-i", data, "-F", "comm,pid,tid,ip,sym"], {
      maxBuffer: 1 << 30,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    const own = { weft: new Set([process.pid]), iperf3 };
    print(categorize(script, SAMPLE_HZ, wasmFunctionNames(), own), bytes, cpu, s.name, gbits, syscalls);
    if (args.keep) console.log(`\nperf.data kept in ${dir} (perf report -i ${data})`);
  } finally {
    if (setup) await destroySetup(setup);
    if (!args.keep) removeTempDir(dir);
    // What --perf-basic-prof leaves: the JIT symbol map perf script read, and V8's per-isolate logs.
    rmSync(join("/tmp", `perf-${process.pid}.map`), { force: true });
    for (const f of readdirSync("."))
      if (f.startsWith("isolate-") && f.endsWith(`-${process.pid}-v8.log`)) rmSync(f, { force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
