// `weft bench` end to end, as a user runs it (the built CLI, as root): a --quick run over two
// backends, wasm-vxlan with offloads on and off, must produce every figure for every setup (and
// with --family 4,6 an IPv6 TCP row for vxlan, host-gw and wasm-vxlan),
// present and positive (zero only where zero is a real outcome), a report directory, and leave
// nothing behind; a run that fails must be reported while the others go on; an interrupt must
// leave nothing behind either. Speed is never asserted: figures
// depend on the machine and on what else runs on it.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LOADED_PINGS } from "../../src/bench/load.js";
import type { BenchReport } from "../../src/bench/report.js";
import { leftovers, pids, procFile, runCli } from "../support/cli-run.js";
import { OFFLOADS_OFF } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { pathWithout } from "../support/path-without.js";

const work = mkdtempSync(join(tmpdir(), "weft-bench-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Every process below root (by parent pid, from /proc). */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const pid of pids()) {
    const stat = procFile(pid, "stat");
    if (stat === undefined) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const out: number[] = [];
  for (let todo = [root]; todo.length > 0; ) {
    const next = todo.flatMap((p) => children.get(p) ?? []);
    out.push(...next);
    todo = next;
  }
  return out;
}

/** Kills the processes below `pid` whose command line `matches` once one runs (looked for every 100 ms, for up to 5 s). */
function killBelow(pid: number, matches: (cmdline: string) => boolean, done: (pids: number[]) => void): void {
  const since = Date.now();
  const look = setInterval(() => {
    const found = descendants(pid).filter((p) => matches(commandOf(p)));
    if (found.length === 0 && Date.now() - since < 5000) return;
    clearInterval(look);
    done(found);
    for (const p of found) process.kill(p, "SIGKILL");
  }, 100);
}

/** Kills the iperf3 clients below `pid` once one runs. */
const killIperfClients = (pid: number, done: (pids: number[]) => void) =>
  killBelow(pid, (cmd) => cmd.startsWith("iperf3 -c"), done);

const commandOf = (pid: number) => procFile(pid, "cmdline")?.replace(/\0/g, " ") ?? "";

/** Runs `weft bench args`. */
const bench = (name: string, args: string[], onStderr?: (text: string, pid: number) => void) =>
  runCli(work, name, ["bench", ...args], onStderr);

describe.runIf(canUseNetns())("weft bench", () => {
  it("--quick on two backends, offloads on and off: every figure present and positive, a full report, nothing left behind", async () => {
    const out = join(work, "report");
    const r = await bench("quick", ["--quick", "--backends", "vxlan,wasm-vxlan", "--offloads", "on,off", "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    expect(leftovers(r)).toEqual([]);

    const setups = ["vxlan", "wasm-vxlan", "wasm-vxlan (offloads off)"];
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as BenchReport;
    expect(report.settings).toMatchObject({
      backends: ["vxlan", "wasm-vxlan"],
      offloads: ["on", "off"],
      quick: true,
      rounds: 1,
      duration: 1,
      streams: [1, 4],
    });
    expect(report.settings.setups.map((x) => x.name)).toEqual(setups);
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.cpuModel).not.toBe("");
    expect(report.machine.kernel).not.toBe("");
    expect(report.git.commit).toMatch(/^([0-9a-f]{40}|unknown)$/);
    expect(Object.keys(report.netConf).sort()).toEqual(setups);
    expect(report.netConf["wasm-vxlan"]).toMatchObject({ Backend: { Type: "wasm-vxlan", Offloads: true } });
    expect(report.netConf["wasm-vxlan (offloads off)"]).toMatchObject({
      Backend: { Type: "wasm-vxlan", Offloads: false },
    });
    // What the agents' dataplanes really ran with, from their status: the off setup had none.
    expect(Object.keys(report.offload).sort()).toEqual(["wasm-vxlan", "wasm-vxlan (offloads off)"]);
    for (const [setup, hosts] of Object.entries(report.offload))
      expect(Object.keys(hosts).sort(), setup).toEqual(["host1", "host2"]);
    for (const o of Object.values(report.offload["wasm-vxlan (offloads off)"])) {
      expect(o).toEqual(OFFLOADS_OFF);
    }
    // With offloads on, either in force or off with the kernel's reason (an old kernel).
    for (const o of Object.values(report.offload["wasm-vxlan"]))
      expect(o.enabled ? o.tun.length > 0 && o.udpGro : o.reason !== undefined).toBe(true);
    // 2 TCP (1 and 4 streams), 2 UDP, ping, ping under load, flood tail per setup, one round; one
    // idle-cost window for all.
    expect(report.samples).toHaveLength(24);
    for (const setup of setups)
      expect(
        report.samples.filter((x) => x.setup === setup),
        setup,
      ).toHaveLength(8);
    expect(report.figures.map((f) => f.id)).toEqual(
      expect.arrayContaining([
        "tcp-1.gbps",
        "tcp-4.gbps",
        "udp-64.receivedKpps",
        "udp-1400.lossPercent",
        "rtt.p99",
        "tcp-4.cpuTotal",
        "tcp-1.cpuAgents",
        "loaded-rtt.p50",
        "loaded-rtt.p99",
        "flood-tail.floodTailMs",
        "flood-tail.floodDelayP50Ms",
        "flood-tail.floodDelayP99Ms",
        "flood-tail.floodSentKpps",
        "flood-tail.floodReceiverDropPercent",
        "idle.cpuPercent",
      ]),
    );
    for (const f of report.figures) {
      for (const b of setups) {
        const v = f.medians[b];
        expect(Number.isFinite(v), `${f.id} of ${b}: ${v}`).toBe(true);
        if (f.mayBeZero) expect(v, `${f.id} of ${b}`).toBeGreaterThanOrEqual(0);
        else expect(v, `${f.id} of ${b}`).toBeGreaterThan(0);
      }
      if (!f.mayBeZero)
        for (const b of setups.slice(1)) expect(f.ratios[b], `${f.id} ratio of ${b}`).toBeGreaterThan(0);
    }
    // Ping under load pools LOADED_PINGS pings, each with its own echo identifier (so its own queue
    // pair): every one was answered, and the percentiles are over all their replies.
    for (const x of report.samples.filter((x) => x.workload === "loaded-rtt")) {
      const raw = x.raw as { sent: number; rttsMs: number[]; perPing: Array<{ sent: number; received: number }> };
      expect(raw.perPing, x.setup).toHaveLength(LOADED_PINGS);
      for (const one of raw.perPing) expect(one.received, x.setup).toBeGreaterThan(0);
      expect(raw.rttsMs.length).toBe(raw.perPing.reduce((n, one) => n + one.received, 0));
      expect(raw.sent).toBe(raw.perPing.reduce((n, one) => n + one.sent, 0));
    }
    // The userspace dataplane runs in the agents: its share of the CPU cannot be zero.
    for (const b of setups.slice(1))
      expect(report.figures.find((f) => f.id === "tcp-1.cpuAgents")!.medians[b], b).toBeGreaterThan(0);
    expect(report.micro.length).toBeGreaterThan(0);
    for (const m of report.micro) expect(m.rate, m.name).toBeGreaterThan(0);

    const md = readFileSync(join(out, "report.md"), "utf8");
    expect(md).toContain("| TCP 1 stream throughput |");
    expect(md).toContain("| wasm-vxlan (offloads off) |");
    expect(md).toContain("`--offloads on,off`; in force: wasm-vxlan: ");
    expect(md).toContain("wasm-vxlan (offloads off): off (disabled by the offloads option)");
    expect(md).toContain("(chart.svg)");
    for (const row of [
      "ping under load p99",
      "flood tail: oldest of its own delivered after its stop",
      "idle cost, per agent",
    ])
      expect(md).toContain(`| ${row} |`);
    // The header keeps the load at the start and after the traffic (not after the microbenchmarks),
    // and the load workloads are defined where they are read.
    expect(md).toMatch(/1-minute load average at the start \d+\.\d\d, after the last traffic round \d+\.\d\d\./);
    expect(report.machine.loadAverageAfterTraffic).toBeGreaterThanOrEqual(0);
    for (const term of ["**Ping under load**", "**Flood tail**", "**Idle cost**"]) expect(md).toContain(term);
    const svg = readFileSync(join(out, "chart.svg"), "utf8");
    expect(svg.startsWith("<svg ")).toBe(true);
    expect(svg).toContain(">wasm-vxlan</text>");
    expect(svg).toContain(">wasm-vxlan (offloads off)</text>");
    expect(svg).toContain(">flood tail: oldest of its own delivered after its stop (lower is better)</text>");
    expect(svg).toContain(">idle cost, per agent (lower is better)</text>");
    expect(r.stdout).toContain("ratio to vxlan");
    expect(r.stdout).toContain("wasm-vxlan (offloads off)");
    expect(r.stderr).toContain("round 1/1 · wasm-vxlan (offloads off) · TCP 1 stream");
  }, 180_000);

  it("--family 4,6: a TCP-over-IPv6 row for vxlan, host-gw and wasm-vxlan, measured in IPv6-only labs, next to the IPv4 rows; nothing left behind", async () => {
    const out = join(work, "report-v6");
    const r = await bench("family", [
      "--quick",
      "--backends",
      "vxlan,host-gw,wasm-vxlan",
      "--family",
      "4,6",
      "--streams",
      "1",
      "--out",
      out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(leftovers(r)).toEqual([]);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as BenchReport;
    expect(report.settings.families).toEqual([4, 6]);
    expect(Object.keys(report.netConf).sort()).toEqual([
      "host-gw",
      "host-gw (IPv6)",
      "vxlan",
      "vxlan (IPv6)",
      "wasm-vxlan",
      "wasm-vxlan (IPv6)",
    ]);
    expect(report.netConf["wasm-vxlan (IPv6)"]).toMatchObject({ EnableIPv4: false, EnableIPv6: true });
    expect(report.netConf["vxlan (IPv6)"]).toEqual({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: "2001:2:0:8000::/49",
      Backend: { Type: "vxlan" },
    });
    expect(report.netConf.vxlan).toEqual({ Network: "198.19.0.0/16", Backend: { Type: "vxlan" } });
    const row = report.figures.find((f) => f.id === "tcp6-1.gbps")!;
    expect(row.label).toBe("TCP 1 stream over IPv6 throughput");
    for (const b of ["vxlan", "host-gw", "wasm-vxlan"]) expect(row.medians[b], b).toBeGreaterThan(0);
    expect(row.ratios["host-gw"]).toBeGreaterThan(0);
    expect(row.ratios["wasm-vxlan"]).toBeGreaterThan(0);
    expect(
      report.samples
        .filter((x) => x.workload === "tcp6-1")
        .map((x) => x.setup)
        .sort(),
    ).toEqual(["host-gw", "vxlan", "wasm-vxlan"]);
    expect(readFileSync(join(out, "report.md"), "utf8")).toContain("| TCP 1 stream over IPv6 throughput |");
  }, 420_000);

  it("a run that fails is reported, and the other runs still measured; the exit code says so; ping under load without a result is measured again; nothing left behind", async () => {
    const out = join(work, "failed-run");
    let killed: number[] = [];
    let killedLoaded: number[] = [];
    const r = await bench(
      "failed-run",
      ["--quick", "--backends", "vxlan", "--duration", "4", "--out", out],
      (text, pid) => {
        if (killedLoaded.length === 0 && text.includes("round 1/1 · vxlan · ping under load")) {
          killedLoaded = [-1];
          // Ping under load's TCP client too, once: that run is measured again (a stall beside the flood).
          killIperfClients(pid, (found) => (killedLoaded = found));
        }
        if (killed.length > 0 || !text.includes("round 1/1 · vxlan · TCP 1 stream")) return;
        killed = [-1];
        // The TCP client is killed once it runs: its run fails as a stalled one would.
        killIperfClients(pid, (found) => (killed = found));
      },
    );
    expect(killed.length, r.stderr).toBeGreaterThan(0);
    expect(killed, r.stderr).not.toContain(-1);
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toContain("BENCH_RUNS_FAILED");
    expect(leftovers(r)).toEqual([]);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as BenchReport;
    expect(report.failures.map((f) => [f.setup, f.workload, f.round])).toEqual([["vxlan", "tcp-1", 1]]);
    expect(report.failures[0].code).toMatch(/^LAB_/);
    expect(killedLoaded, r.stderr).not.toContain(-1);
    expect(report.retried.map((f) => [f.setup, f.workload, f.round])).toEqual([["vxlan", "loaded-rtt", 1]]);
    expect(r.stderr).toContain("measuring it again");
    // Every later run on the same lab was measured.
    expect(report.samples.map((x) => x.workload).sort()).toEqual(
      ["flood-tail", "idle", "loaded-rtt", "rtt", "tcp-4", "udp-1400", "udp-64"].sort(),
    );
    const md = readFileSync(join(out, "report.md"), "utf8");
    expect(md).toContain("| TCP 1 stream throughput | Gbit/s | higher | - (1 failed) |");
    expect(md).toContain("- round 1 · vxlan · TCP 1 stream: [LAB_");
    expect(md).toContain("**Measured again**");
  }, 300_000);

  it("a step after the traffic rounds that fails (the microbenchmarks) still leaves a report of what was measured, and its exit code", async () => {
    const out = join(work, "micro-failed");
    let killed: number[] = [];
    const r = await bench("micro-failed", ["--quick", "--backends", "vxlan", "--out", out], (text, pid) => {
      if (killed.length > 0 || !text.includes("microbenchmarks")) return;
      killed = [-1];
      killBelow(
        pid,
        (cmd) => cmd.includes("bench/micro/run.js"),
        (found) => (killed = found),
      );
    });
    expect(killed, r.stderr).not.toContain(-1);
    expect(killed.length, r.stderr).toBeGreaterThan(0);
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toContain("BENCH_MICRO_FAILED");
    expect(leftovers(r)).toEqual([]);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as BenchReport;
    expect(report.samples).toHaveLength(8);
    expect(report.micro).toEqual([]);
    expect(report.incomplete).toMatchObject({ step: "microbenchmarks", code: "BENCH_MICRO_FAILED" });
    // Taken before the microbenchmarks ran.
    expect(report.machine.loadAverageAfterTraffic).toBeGreaterThanOrEqual(0);
    const md = readFileSync(join(out, "report.md"), "utf8");
    expect(md).toContain("**Incomplete**: microbenchmarks failed: [BENCH_MICRO_FAILED] ");
    expect(md).toContain("| TCP 1 stream throughput |");
  }, 180_000);

  it("without iperf3 on PATH, stops at once with LAB_TRAFFIC_TOOL_MISSING and how to install it, before any lab", async () => {
    const out = join(work, "no-iperf3");
    const path = pathWithout(join(work, "no-iperf3-bin"), ["iperf3"]);
    const r = await runCli(work, "no-iperf3", ["bench", "--quick", "--backends", "vxlan", "--out", out], undefined, {
      PATH: path,
    });
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(
      /LAB_TRAFFIC_TOOL_MISSING.*iperf3 not found on PATH .*apt-get install iperf3 iputils-ping/,
    );
    // Stopped before the first step: no lab, no report.
    expect(r.stderr).not.toContain("building the vxlan lab");
    expect(existsSync(out)).toBe(false);
    expect(leftovers(r)).toEqual([]);
  }, 300_000);

  it("an interrupt during the measurements stops the agents and removes everything", async () => {
    let sent = false;
    const r = await bench(
      "interrupt",
      ["--quick", "--backends", "vxlan", "--duration", "20", "--out", join(work, "never")],
      (text, pid) => {
        if (!sent && text.includes("round 1/1")) {
          sent = true;
          // Into the middle of the first iperf3 run.
          setTimeout(() => process.kill(pid, "SIGINT"), 2000);
        }
      },
    );
    expect(sent, r.stderr).toBe(true);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("BENCH_INTERRUPTED");
    expect(leftovers(r)).toEqual([]);
    expect(() => readdirSync(join(work, "never"))).toThrow();
  }, 120_000);
});
