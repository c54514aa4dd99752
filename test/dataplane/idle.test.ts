// An idle userspace dataplane costs nothing: its workers sleep in poll() without a timeout until
// a packet comes or they are told to stop. The first test runs in a child process (the built
// dataplane, as the agent runs it), since it is also about how that process ends: one that exits
// without stop() must not hang on workers that sleep in a system call. A thread asleep there is
// not terminated either until it returns to JavaScript, which the second test holds.
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { ping } from "../../src/lab/traffic.js";
import { projectFile } from "../../src/paths.js";
import { dataplanePair } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

const dist = (...p: string[]) => pathToFileURL(projectFile("dist", "src", ...p)).href;

// One lab host with a started two-worker dataplane and no traffic (IPv6 off on its device, as the
// backend sets it, so the kernel sends it no solicitation): once the threads the start added are
// quiet (their startup done), their voluntary context switches over 2 s; then process.exit()
// without stop().
const CHILD = `
import { readdirSync, readFileSync } from "node:fs";
import { LabCluster, LAB_POD_NETWORK } from "${dist("lab", "cluster.js")}";
import { UserspaceDataplane } from "${dist("dataplane", "dataplane.js")}";
import { withNetns } from "${dist("io", "netns.js")}";
const switches = () => new Map(readdirSync("/proc/self/task").map((t) => [t,
  Number(/voluntary_ctxt_switches:\\s+(\\d+)/.exec(readFileSync("/proc/self/task/" + t + "/status", "utf8"))[1])]));
const lab = await LabCluster.create({ tag: "idle", hosts: 1 });
const h = lab.hosts[0];
const dp = withNetns(h.ns.name, () => new UserspaceDataplane({ format: "vxlan", tunName: "weft0", mtu: 1450,
  network: LAB_POD_NETWORK, subnet: { addr: 0xc6130100, len: 24 }, listenAddr: h.underlayAddr, port: 8472, vni: 1,
  vtepMac: Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 1, 0]), workers: 2 }));
await h.ns.kernel.sysctl("net/ipv6/conf/weft0/disable_ipv6", 1);
const before = new Set(switches().keys());
await dp.start(h.ns.kernel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const delta = (a, b, ts) => ts.map((t) => b.get(t) - (a.get(t) ?? 0));
let a = switches();
for (let i = 0; i < 60; i++) {
  await sleep(500);
  const b = switches();
  const quiet = delta(a, b, [...b.keys()].filter((t) => !before.has(t))).every((d) => d === 0);
  a = b;
  if (quiet) break;
}
await sleep(2000);
const b = switches();
const added = [...b.keys()].filter((t) => !before.has(t));
console.log(JSON.stringify({ namespaces: [h.ns.name], workDir: lab.workDir, wakes: delta(a, b, added) }));
process.exit(0);
`;

describe.skipIf(!canUseNetns())("an idle userspace dataplane", () => {
  it("sleeps: no worker wakes without a packet, and a process that exits without stop() still ends", async () => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", CHILD], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (err += d));
    // A liveness bound, not a speed: before the exit hook, such a process never ended.
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) =>
      child.on("exit", (c, s) => r([c, s])),
    );
    clearTimeout(killer);
    expect({ code, signal }, err).toEqual({ code: 0, signal: null });
    const { namespaces, workDir, wakes } = JSON.parse(out) as {
      namespaces: string[];
      workDir: string;
      wakes: number[];
    };
    // The two workers are among the threads the start added; a worker that looked at its stop word
    // ten times a second (as before) woke some 20 times here.
    expect(wakes.length, out).toBeGreaterThanOrEqual(2);
    expect(
      wakes.every((w) => w <= 2),
      out,
    ).toBe(true);
    const left = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    for (const ns of namespaces) expect(left).not.toContain(ns);
    // Nor the lab's work dir (the CNI plugin's launcher), which outlived such a process.
    expect(existsSync(workDir), workDir).toBe(false);
  }, 90_000);

  it("replaces workers killed while they sleep, and carries traffic again", async () => {
    const { lab, dps } = await dataplanePair("idlekill");
    try {
      const [p1] = lab.hosts[0].pods;
      const [p2] = lab.hosts[1].pods;
      expect((await ping(p1, p2.addr, { count: 1 })).received).toBe(1);
      await new Promise((r) => setTimeout(r, 300));
      // Without the wake-up, terminate() of a sleeping thread never returned.
      expect(await dps[0].killWorkers()).toBe(2);
      expect((await ping(p1, p2.addr, { count: 2 })).received).toBe(2);
      expect(dps[0].counters().workerRestarts).toBeGreaterThanOrEqual(2);
    } finally {
      await Promise.allSettled(dps.map((dp) => dp.stop()));
      await lab.destroy();
    }
  }, 60_000);
});
