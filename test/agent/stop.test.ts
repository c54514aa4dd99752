// The agent's stop, with real agents in lab namespaces, where it overlaps something: a stop that
// hangs (a reload reading a FIFO holds it) is waited for at a second SIGTERM and given up at a
// second SIGINT (before, both did nothing, so a wedged stop could not be ended by Ctrl-C); a
// backend whose stop failed in a swap leaves its device to the agent's stop, which finds it (before,
// the stop skipped the lane and exited 0 "stopped", flannel.1 left); a SIGTERM during a fatal
// stop waits for it (before, a second stop ran beside it, found the lanes taken, exited 0 before
// the first was done).
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { VTEP_MAC_FILE } from "../../src/backends/vtep-mac.js";
import { type LabAgent, running } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { type RefusingTool, refusingTool } from "../support/refusing-tool.js";
import { agentLab, coded, eventually, holdNetConf, logRecords, NETWORK, netConf, overlayDevices } from "./support.js";

describe.skipIf(!canUseNetns())("agent: a stop that overlaps", () => {
  // host2's ip refuses what a test sets, as a kernel would.
  let ip: RefusingTool;
  const env = agentLab({
    tag: "aso",
    hosts: 2,
    conf: () => ({ Network: NETWORK, Backend: { Type: "vxlan" } }),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
    beforeStart: async () => {
      ip = await refusingTool("ip");
    },
    setup: (a) => {
      if (a === env.all[1]) a.env = { PATH: `${ip.bin}:${process.env.PATH}` };
    },
  });
  afterAll(() => ip?.remove());

  const startAgain = async (a: LabAgent) => {
    env.agents.start(a);
    await env.agents.waitReady(a);
  };
  // A case that failed before starting again what it stopped does not fail the ones after it.
  beforeEach(async () => {
    for (const a of env.all) if (!running(a.process)) await startAgain(a);
  });

  it("a stop held by a reload: a second SIGTERM is logged and waits, a second SIGINT exits at once saying what may be left", async () => {
    const a2 = env.all[1];
    const text = await readFile(env.agents.netConfPath(a2), "utf8");
    const path = env.agents.netConfPath(a2);
    // One thread in libuv's pool, which the reload's read of the FIFO holds, as hanging calls can
    // hold them all: a log written through the pool (pino's default) would write nothing from here.
    const envBefore = a2.env;
    await env.agents.stop(a2);
    a2.env = { ...envBefore, UV_THREADPOOL_SIZE: "1" };
    await startAgain(a2);
    const since = await env.agents.logSize(a2);
    await holdNetConf(env.agents, a2, text);
    try {
      env.agents.reload(a2);
      a2.process!.kill("SIGTERM");
      await eventually(
        "the stop under way",
        () => readFile(join(a2.dir, "agent.log"), "utf8"),
        (t) => t.slice(since).includes('"msg":"stopping"'),
        10_000,
      );
      a2.process!.kill("SIGTERM");
      await eventually(
        "the second SIGTERM logged",
        () => coded(a2.dir, since, "CLI_STOP_IN_PROGRESS"),
        (r) => r.length === 1,
        10_000,
      );
      expect(a2.process!.exitCode).toBe(null);
      a2.process!.kill("SIGINT");
      expect(await env.agents.exited(a2, 10_000)).toBe(null);
      expect(a2.process!.signalCode).toBe("SIGINT");
      const [abandoned] = await coded(a2.dir, since, "CLI_STOP_ABANDONED");
      expect(abandoned.msg).toMatch(/devices, routes, ip-masq rules or subnet.env may be left/);
    } finally {
      // No reader is left for the FIFO: a plain file goes in its place.
      await rm(path, { force: true });
      await writeFile(path, text);
      await env.agents.stop(a2, "SIGKILL");
      a2.env = envBefore;
    }
    // The next start takes over what was left.
    await startAgain(a2);
  }, 90_000);

  it("a swap whose stop of the old backend failed, then SIGTERM while the lane is down: the stop removes flannel.1 and says so", async () => {
    const a2 = env.all[1];
    const path = env.agents.netConfPath(a2);
    const text = await readFile(path, "utf8");
    const macFile = join(a2.stateDir, VTEP_MAC_FILE);
    const mac = await readFile(macFile, "utf8");
    const since = await env.agents.logSize(a2);
    try {
      await ip.refuse("^link del flannel\\.1$");
      // The way back's starts read a damaged VTEP MAC: the lane stays down, retried with backoff.
      await writeFile(macFile, "not a MAC\n");
      await writeFile(path, JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", VNI: 2 } }));
      env.agents.reload(a2);
      await eventually(
        "the swap's stop failed and its restart too",
        () => coded(a2.dir, since, "AGENT_BACKEND_RESTART_FAILED"),
        (r) => r.length >= 1,
        30_000,
      );
      expect(await coded(a2.dir, since, "AGENT_SWAP_STOP_FAILED")).toHaveLength(1);
      expect(await overlayDevices(a2.host)).toEqual(["flannel.1"]);
    } finally {
      await ip.refuse();
    }
    await env.agents.stop(a2);
    expect(a2.process!.exitCode).toBe(0);
    // Before, the stop skipped the down lane, logged "stopped" and left flannel.1 with its address.
    expect(await overlayDevices(a2.host)).toEqual([]);
    const swept = await coded(a2.dir, since, "AGENT_STALE_DEVICE");
    expect(swept.map((r) => r.dev)).toEqual(["flannel.1"]);
    await writeFile(macFile, mac);
    await writeFile(path, text);
    await startAgain(a2);
  }, 90_000);

  it("a SIGTERM during a fatal stop (held by a reload) waits for it: one stop, exit 1, flannel.1 removed", async () => {
    const [a1, a2] = env.all;
    const text = await readFile(env.agents.netConfPath(a2), "utf8");
    const since = await env.agents.logSize(a2);
    const release = await holdNetConf(env.agents, a2, text);
    const twinDir = join(a1.dir, "twin");
    const twin: LabAgent = { host: a1.host, dir: twinDir, stateDir: twinDir };
    try {
      env.agents.reload(a2);
      // host1 gone: host2 has no alive member left and joins again from its join list (host1),
      // where another node named host2 answers now: the name conflict is fatal.
      await env.agents.stop(a1, "SIGKILL");
      await env.agents.waitFor(a2, "joining again", (s) => s.join.state === "rejoining", 60_000);
      await mkdir(twinDir);
      await writeFile(join(twinDir, "net-conf.json"), JSON.stringify(netConf("vxlan")));
      env.agents.start(twin, ["--node-name", "host2", "--subnet-seeds", "ghost"], []);
      await eventually(
        "the name conflict",
        () => coded(a2.dir, since, "GOSSIP_NAME_CONFLICT"),
        (r) => r.some((l) => l.msg === "this node cannot go on running"),
        60_000,
      );
      a2.process!.kill("SIGTERM");
      await eventually(
        "the SIGTERM logged",
        () => logRecords(a2.dir, since),
        (r) => r.some((l) => l.signal === "SIGTERM"),
        10_000,
      );
      await release();
      // Before, the SIGTERM's stop exited 0 while the fatal one was removing flannel.1.
      expect(await env.agents.exited(a2, 30_000)).toBe(1);
      expect(await overlayDevices(a2.host)).toEqual([]);
      expect(await coded(a2.dir, since, "CLI_STOP_IN_PROGRESS")).toHaveLength(1);
    } finally {
      await env.agents.stop(twin);
    }
  }, 180_000);
});

describe.skipIf(!canUseNetns())("agent: a family switched off across a kept restart", () => {
  const dual = {
    Network: NETWORK,
    EnableIPv6: true,
    IPv6Network: formatPrefix6(LAB_POD_NETWORK6),
    Backend: { Type: "vxlan", DirectRouting: true },
  };
  const env = agentLab({
    tag: "akf",
    hosts: 2,
    ipv6: true,
    conf: () => dual,
    settled: { what: "both families' peer", check: (s) => s.ready && s.peers.length === 1 && s.peers6?.length === 1 },
    flags: () => ["--keep-on-exit"],
  });
  /** The IPv6 gateway routes to node subnets on the underlay interface (DirectRouting's). */
  const gatewayRoutes6 = async (a: LabAgent) =>
    (await a.host.ns.ip(`-6 route show root ${formatPrefix6(LAB_POD_NETWORK6)} dev ${a.host.underlayIf}`))
      .split("\n")
      .filter((l) => l.includes(" via "));

  it("flannel-v6.1 and DirectRouting's IPv6 routes kept by the stop go at the IPv4-only start", async () => {
    const a2 = env.all[1];
    await env.agents.stop(a2);
    expect((await overlayDevices(a2.host)).sort()).toEqual(["flannel-v6.1", "flannel.1"]);
    expect(await gatewayRoutes6(a2)).toHaveLength(1);
    const since = await env.agents.logSize(a2);
    await writeFile(
      env.agents.netConfPath(a2),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", DirectRouting: true } }),
    );
    env.agents.start(a2, ["--keep-on-exit"]);
    await env.agents.waitReady(a2);
    // Before, the sweep looked only in the IPv4 network: flannel-v6.1 and the route stayed for good.
    expect(await overlayDevices(a2.host)).toEqual(["flannel.1"]);
    expect(await gatewayRoutes6(a2)).toEqual([]);
    expect((await coded(a2.dir, since, "AGENT_STALE_DEVICE")).map((r) => r.dev)).toEqual(["flannel-v6.1"]);
    expect(await coded(a2.dir, since, "AGENT_STALE_ROUTE")).toHaveLength(1);
  }, 90_000);
});
