// A real agent whose udp backend fails again right after each restart (its TUN device `flannel0`
// deleted as soon as the new one runs, as a dataplane whose workers die at every start would
// fail): the first failure restarts at once, each one after is started again only after the
// restarts' backoff, doubling from 1 s, the node not ready meanwhile. Before, every failure
// restarted at once and its publish set the backoff back: the node went ready and not ready every
// ~2 s for ever. While it waits, /metrics keeps every counter's series, none lower, the workers
// of the stopped dataplane as down, and each member state's gauge at 0 too (before, the kernel
// programming, dataplane and socket drop series went until a backend ran, and so did every
// member state no member was in). So do starts that fail: the stopped dataplane's workers stay
// down (before, a kernel backend's failed start, with no dataplane, took the series away).
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { canUseNetns } from "../support/netns.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import type { LabAgent } from "../../src/lab/agents.js";
import { agentLab, counterSamples, eventually, logRecords, netConf, takeDeviceName } from "./support.js";

describe.skipIf(!canUseNetns())("an agent whose backend fails again right after each restart", () => {
  const env = agentLab({
    tag: "abf",
    hosts: 1,
    conf: () => netConf("udp"),
    settled: { what: "ready", check: (s) => s.ready },
  });

  it("restarts the first failure at once and each next one after a doubling backoff", async () => {
    const [a] = env.all;
    const since = await env.agents.logSize(a);
    const logged = () => logRecords(a.dir, since);
    const restarted = async () => (await logged()).filter((r) => r.code === "AGENT_BACKEND_RESTARTED").length;
    for (let n = 1; n <= 3; n++) {
      await a.host.ns.ip("link del flannel0");
      await eventually(`restart ${n}`, restarted, (c) => c >= n, 30_000);
    }
    await env.agents.waitReady(a, 10_000);
    const records = (await logged()).filter((r) =>
      ["AGENT_BACKEND_FAILED", "AGENT_BACKEND_RESTARTED"].includes(String(r.code)),
    );
    // Each failure followed by its restart, in turn (one failure per deletion).
    expect(records.map((r) => r.code)).toEqual([
      "AGENT_BACKEND_FAILED",
      "AGENT_BACKEND_RESTARTED",
      "AGENT_BACKEND_FAILED",
      "AGENT_BACKEND_RESTARTED",
      "AGENT_BACKEND_FAILED",
      "AGENT_BACKEND_RESTARTED",
    ]);
    const failed = records.filter((r) => r.code === "AGENT_BACKEND_FAILED");
    // The first ran since the agent's start: restarted at once. The next failed within a minute
    // of their restart: the wait doubles although each restart's publish made the node ready.
    expect(failed.map((r) => r.retryInMs)).toEqual([undefined, 1000, 2000]);
    expect(String(failed[2].msg)).toMatch(/within 60 s of its restart \(2 in a row\): starting it in 2000 ms/);
    // Each waited restart came after its wait (a lower bound: the timer never runs early; a few
    // ms of leeway for the clocks' rounding).
    for (const i of [1, 2]) {
      const [f, r] = [records[2 * i], records[2 * i + 1]];
      expect(Number(r.time) - Number(f.time)).toBeGreaterThanOrEqual(Number(f.retryInMs) - 5);
    }
  });

  const scrape = (a: LabAgent) => agentRequest(a.stateDir, "GET", "/metrics") as Promise<string>;

  it("keeps every counter's series on /metrics while no backend runs, the dataplane's workers down", async () => {
    const [a] = env.all;
    await env.agents.waitReady(a, 30_000);
    const before = counterSamples(await scrape(a));
    expect(before.get('weft_kernel_programming_total{result="ok"}')).toBeGreaterThan(0);
    expect([...before.keys()].some((k) => k.startsWith("weft_dataplane_packets_total{"))).toBe(true);
    const since = await env.agents.logSize(a);
    const logged = () => logRecords(a.dir, since);
    const count = async (code: string) => (await logged()).filter((r) => r.code === code);
    // Deleted until a failure waits before its restart (the first since the agent's start
    // restarts at once; later ones within a minute of theirs wait, 1 s and more), then scraped
    // until a scrape shows the node not ready with no dataplane running (no offloads gauge).
    let during: string | undefined;
    for (let n = 1; n <= 4 && during === undefined; n++) {
      await a.host.ns.ip("link del flannel0");
      const failed = await eventually(
        `failure ${n}`,
        () => count("AGENT_BACKEND_FAILED"),
        (f) => f.length >= n,
        10_000,
      );
      for (let i = 0; failed[n - 1].retryInMs !== undefined && i < 50 && during === undefined; i++) {
        const text = await scrape(a);
        if (/^weft_ready 0$/m.test(text) && !/^weft_dataplane_offloads\{/m.test(text)) during = text;
        else await sleep(20);
      }
      await eventually(
        `restart ${n}`,
        () => count("AGENT_BACKEND_RESTARTED"),
        (r) => r.length >= n,
        30_000,
      );
    }
    expect(during, "a scrape while no backend ran").toBeDefined();
    const samples = counterSamples(during!);
    const fell = [...before].filter(([k, v]) => !((samples.get(k) ?? -1) >= v));
    expect(fell).toEqual([]);
    expect(during).toMatch(/^weft_dataplane_workers_down\{family="4"\} [1-9]\d*$/m);
    for (const state of ["alive", "suspect", "dead", "left"])
      expect(during).toMatch(new RegExp(`^weft_members\\{state="${state}"\\} ${state === "alive" ? 1 : 0}$`, "m"));
    await env.agents.waitReady(a, 30_000);
  });

  it("shows the stopped dataplane's workers down while no backend runs after a kernel backend failed to start", async () => {
    const [a] = env.all;
    await env.agents.waitReady(a, 30_000);
    const since = await env.agents.logSize(a);
    const codes = async () => (await logRecords(a.dir, since)).map((r) => r.code);
    const workersDown = async () => /^weft_dataplane_workers_down\{family="4"\} (\d+)$/m.exec(await scrape(a))?.[1];
    const macFile = join(a.stateDir, "vtep-mac");
    const inForce = await readFile(env.agents.netConfPath(a), "utf8");
    // flannel0's name taken by a bridge: the udp backend fails, and each new one fails to start
    // (EINVAL, as it is made) until the bridge goes.
    await takeDeviceName(a.host, "flannel0");
    try {
      await eventually("the restart to fail", codes, (c) => c.includes("AGENT_BACKEND_RESTART_FAILED"), 40_000);
      const down = Number(await workersDown());
      expect(down).toBeGreaterThan(0);
      // A SIGHUP to vxlan, which fails to start (a damaged VTEP MAC file), and the way back too.
      await writeFile(macFile, "not a MAC\n");
      await writeFile(env.agents.netConfPath(a), JSON.stringify(netConf("vxlan")));
      env.agents.reload(a);
      await eventually("the swap to fail", codes, (c) => c.includes("AGENT_ROLLBACK_FAILED"), 20_000);
      // Before, the failed vxlan start, with no dataplane, took the series away.
      expect(Number(await workersDown())).toBe(down);
    } finally {
      await rm(macFile, { force: true });
      await writeFile(env.agents.netConfPath(a), inForce);
      await a.host.ns.ip("link del flannel0");
    }
    env.agents.reload(a);
    await env.agents.waitReady(a, 40_000);
  }, 90_000);
});
