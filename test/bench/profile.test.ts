// bench:profile's sorting of perf samples: each sample lands in exactly one category by its call
// stack, kernel copies apart from the rest of the syscall they serve, Wasm by function name. And
// a Ctrl-C before its first namespace leaves no temp dir.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { categorize } from "../../bench/profile/categories.js";
import { projectFile } from "../../src/paths.js";
import { SIGINT_AT_TEMP_DIR } from "../support/cli-run.js";
import { canUseNetns } from "../support/netns.js";

/** A `perf script -F comm,pid,tid,ip,sym` sample: header, then frames innermost first. */
const sampleOf = (comm: string, pid: number, ...frames: string[]) =>
  [`${comm} ${pid}/${pid + 1} `, ...frames.map((f, i) => `\t    ffff${i.toString(16).padStart(4, "0")} ${f}`), ""].join(
    "\n",
  );
const WEFT = 4242;
const IPERF3 = 5000;
/** Samples of the profiled processes: weft's node, the setup's iperf3, the idle task. */
const sample = (comm: string, ...frames: string[]) =>
  sampleOf(comm, comm === "node" ? WEFT : comm === "iperf3" ? IPERF3 : comm === "swapper" ? 0 : 77, ...frames);
const own = { weft: new Set([WEFT]), iperf3: new Set([IPERF3]) };

describe("bench:profile categories", () => {
  it("files every sample once, by its innermost frame and the syscall it serves", () => {
    const script = [
      sample("swapper", "pv_native_safe_halt", "default_idle"),
      sample("iperf3", "_copy_from_iter", "tcp_sendmsg_locked"),
      sample("node", "JS:wasm-function[1]-1-turbofan", "JS:wasm-function[0]-0-turbofan", "Builtins_JSEntry"),
      sample("node", "JS:wasm-function[1]-1-turbofan"),
      sample(
        "node",
        "_copy_to_iter",
        "skb_copy_datagram_iter",
        "tun_do_read",
        "tun_chr_read_iter",
        "do_syscall_64",
        "__GI___readv",
      ),
      sample(
        "node",
        "tcp_v4_rcv",
        "ip_local_deliver",
        "netif_receive_skb",
        "tun_get_user",
        "do_syscall_64",
        "__GI___writev",
      ),
      sample("node", "_copy_from_iter", "ip_generic_getfrag", "udp_sendmsg", "__sys_sendmmsg", "do_syscall_64"),
      sample("node", "__memmove_avx512_unaligned_erms", "v8::internal::wasm::memory_copy_wrapper"),
      sample("node", "Builtins_LoadIC", "JS:*runWorker file:///x/worker.js:1:1"),
      sample("perf", "evsel__read"),
    ].join("\n");
    const p = categorize(script, 1000, ["packet/checksum/checksumPartial", "packet/checksum/copyChecksumPartial"], own);
    expect(p.total).toBe(10);
    expect(Object.fromEntries(p.categories)).toEqual({
      idle: 1,
      "iperf3 (its syscalls, TCP stack, copies)": 1,
      "weft: Wasm": 2,
      "weft: TUN readv (kernel copy)": 1,
      "weft: TUN writev (rest)": 1,
      "weft: UDP sendmmsg (kernel copy)": 1,
      "weft: memmove (Wasm memory.copy)": 1,
      "weft: JS, V8, N-API glue": 1,
      "other processes": 1,
    });
    expect(Object.fromEntries(p.wasm)).toEqual({ "packet/checksum/copyChecksumPartial": 2 });
    expect([...p.categories.values()]).toEqual([...p.categories.values()].sort((a, b) => b - a));
  });

  it("tells the profiled processes from others of the same name by pid, and softirq work apart", () => {
    const script = [
      // Another session's node dataplane and iperf3 on a shared machine: not ours.
      sampleOf("node", 9001, "_copy_to_iter", "skb_copy_datagram_iter", "tun_do_read", "do_syscall_64"),
      sampleOf("iperf3", 9002, "_copy_from_iter", "tcp_sendmsg_locked"),
      // Our worker threads may carry another command name: the pid decides.
      sampleOf("weft-worker", WEFT, "JS:wasm-function[0]-0-turbofan"),
      // Kernel vxlan's receive path on an idle CPU's time and in ksoftirqd.
      sampleOf("swapper", 0, "vxlan_rcv", "udp_queue_rcv_one_skb", "net_rx_action", "handle_softirqs", "irq_exit_rcu"),
      sampleOf("ksoftirqd/1", 22, "br_handle_frame", "__netif_receive_skb", "net_rx_action", "handle_softirqs"),
      sampleOf("swapper", 0, "pv_native_safe_halt", "default_idle"),
      sampleOf("swapper", 0, "tick_nohz_idle_enter", "do_idle"),
      // A command name with a space.
      sampleOf("Timer thread", 9003, "hrtimer_interrupt"),
    ].join("\n");
    const p = categorize(script, 1000, ["f"], own);
    expect(p.total).toBe(8);
    expect(Object.fromEntries(p.categories)).toEqual({
      "other processes": 3,
      "weft: Wasm": 1,
      "softirq outside our processes (idle CPUs, ksoftirqd, others' time)": 2,
      idle: 2,
    });
  });
});

describe.skipIf(!canUseNetns())("bench:profile on Ctrl-C", () => {
  const work = mkdtempSync(join(tmpdir(), "weft-profile-test-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("the moment its temp dir is made, before the setup's first namespace: exits 130 and leaves no dir nor namespace", () => {
    // A perf that only answers --version: the run ends before it would sample.
    const bin = join(work, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "perf"), "#!/bin/sh\nexit 0\n");
    chmodSync(join(bin, "perf"), 0o755);
    const tmp = join(work, "tmp");
    mkdirSync(tmp);
    const r = spawnSync(
      process.execPath,
      [...SIGINT_AT_TEMP_DIR, projectFile("dist", "bench", "profile", "run.js"), "--setup", "kernel-vxlan"],
      { env: { ...process.env, TMPDIR: tmp, PATH: `${bin}:${process.env.PATH}` }, encoding: "utf8", timeout: 60_000 },
    );
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(130);
    expect(readdirSync(tmp)).toEqual([]);
    const namespaces = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout;
    expect(namespaces.split("\n").filter((l) => l.includes(`-${r.pid}-`))).toEqual([]);
  }, 60_000);
});
