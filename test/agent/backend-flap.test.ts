// A real agent whose udp backend fails again right after each restart (its TUN device `flannel0`
// deleted as soon as the new one runs, as a dataplane whose workers die at every start would
// fail): the first failure restarts at once, each one after is started again only after the
// restarts' backoff, doubling from 1 s, the node not ready meanwhile. Before, every failure
// restarted at once and its publish set the backoff back: the node went ready and not ready every
// ~2 s for ever. While it waits, /metrics keeps every counter's series, none lower, the workers
// of the stopped dataplane as down, and each member state's gauge at 0 too (before, the kernel
// programming, dataplane and socket drop series went until a backend ran, and so did every
// member state no member was in).
import { describe, expect, it } from "vitest";
import { canUseNetns } from "../support/netns.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { agentLab, counterSamples, eventually, logRecords, netConf } from "./support.js";

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

  it("keeps every counter's series on /metrics while no backend runs, the dataplane's workers down", async () => {
    const [a] = env.all;
    const scrape = async () => String(await agentRequest(a.stateDir, "GET", "/metrics"));
    const before = counterSamples(await scrape());
    expect(before.get('weft_kernel_programming_total{result="ok"}')).toBeGreaterThan(0);
    expect([...before.keys()].some((k) => k.startsWith("weft_dataplane_packets_total{"))).toBe(true);
    const since = await env.agents.logSize(a);
    const logged = () => logRecords(a.dir, since);
    await a.host.ns.ip("link del flannel0");
    // A fourth failure within a minute of its restart: the next start waits 4 s.
    await eventually("the failure", logged, (r) => r.some((x) => x.code === "AGENT_BACKEND_FAILED"), 10_000);
    const during = await scrape();
    // Scraped before the restart: else it would show a running backend's series.
    expect((await logged()).map((r) => r.code)).not.toContain("AGENT_BACKEND_RESTARTED");
    const samples = counterSamples(during);
    const fell = [...before].filter(([k, v]) => !((samples.get(k) ?? -1) >= v));
    expect(fell).toEqual([]);
    expect(during).toMatch(/^weft_dataplane_workers_down\{family="4"\} [1-9]\d*$/m);
    for (const state of ["alive", "suspect", "dead", "left"])
      expect(during).toMatch(new RegExp(`^weft_members\\{state="${state}"\\} ${state === "alive" ? 1 : 0}$`, "m"));
    await env.agents.waitReady(a, 30_000);
  });
});
