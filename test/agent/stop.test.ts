// The agent's stop, with real agents in lab namespaces, where it overlaps something: a stop that
// hangs (a reload reading a FIFO holds it) is waited for at a second SIGTERM and given up at a
// second SIGINT (before, both did nothing, so a wedged stop could not be ended by Ctrl-C); a
// backend whose stop failed in a swap leaves its device to the agent's stop, which finds it (before,
// the stop skipped the lane and exited 0 "stopped", flannel.1 left); a SIGTERM during a fatal
// stop waits for it (before, a second stop ran beside it, found the lanes taken, exited 0 before
// the first was done); a --keep-on-exit stop that finds the name taken while it stops gossip
// removes subnet.env at once and flannel.1, and exits 1 (before, it kept them, the winner's subnet
// in subnet.env; then subnet.env went only once gossip had stopped, and the exit was 0).
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { VTEP_MAC_FILE } from "../../src/backends/vtep-mac.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { MEMBERS_FILE } from "../../src/control/saved-members.js";
import { type LabAgent, running } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { type RefusingTool, refusingTool } from "../support/refusing-tool.js";
import { agentLab, coded, eventually, holdNetConf, NETWORK, netConf, overlayDevices } from "./support.js";

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

  /**
   * Holds a's only libuv pool thread (its UV_THREADPOOL_SIZE=1), as hanging calls can hold them
   * all, with a reload reading a FIFO put in net-conf.json's place; returns holdNetConf's release.
   */
  const holdPool = async (a: LabAgent, text: string) => {
    const release = await holdNetConf(env.agents, a, text);
    env.agents.reload(a);
    // Held only once the reload waits in the FIFO's open.
    await eventually(
      "the reload reading net-conf.json",
      async () => {
        const tasks = `/proc/${a.process!.pid}/task`;
        return Promise.all((await readdir(tasks)).map((t) => readFile(join(tasks, t, "wchan"), "utf8")));
      },
      (w) => w.includes("wait_for_partner"),
      10_000,
    );
    return release;
  };
  const startAgain = async (a: LabAgent) => {
    env.agents.start(a);
    await env.agents.waitReady(a);
  };
  // A case that failed before starting again what it stopped does not fail the ones after it.
  beforeEach(async () => {
    // Started together: one alone may wait out its saved peers' join round before it is ready.
    const down = env.all.filter((a) => !running(a.process));
    for (const a of down) env.agents.start(a);
    await Promise.all(down.map((a) => env.agents.waitReady(a)));
  }, 180_000);

  /**
   * A swap to VNI 2 whose stop of flannel.1 is refused (ip refuses it until told otherwise), and
   * whose way back reads a damaged VTEP MAC: the lane stays down, retried with backoff.
   */
  const failSwap = async (a: LabAgent, since: number) => {
    await ip.refuse("^link del flannel\\.1$");
    await writeFile(join(a.stateDir, VTEP_MAC_FILE), "not a MAC\n");
    await writeFile(
      env.agents.netConfPath(a),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", VNI: 2 } }),
    );
    env.agents.reload(a);
    await eventually(
      "the swap's stop failed and its restart too",
      () => coded(a.dir, since, "AGENT_BACKEND_RESTART_FAILED"),
      (r) => r.length >= 1,
      30_000,
    );
  };

  it("a stop held by a reload: a second SIGTERM is logged and waits, so does a first SIGINT, a second SIGINT exits at once saying what may be left", async () => {
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
    try {
      // The stop is held only once the reload waits in the FIFO's open: a stop before it ended at once.
      await holdPool(a2, text);
      a2.process!.kill("SIGTERM");
      await eventually(
        "the stop under way",
        () => readFile(join(a2.dir, "agent.log"), "utf8"),
        (t) => t.slice(since).includes('"msg":"stopping"'),
        10_000,
      );
      // Each logged, the agent still running; before, a first SIGINT after SIGTERM's stop gave it up at once.
      for (const [n, signal] of [
        [1, "SIGTERM"],
        [2, "SIGINT"],
      ] as const) {
        a2.process!.kill(signal);
        await eventually(
          `${signal} logged`,
          () => coded(a2.dir, since, "CLI_STOP_IN_PROGRESS"),
          (r) => r.length === n,
          10_000,
        );
        expect(a2.process!.exitCode).toBe(null);
      }
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
      await failSwap(a2, since);
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

  it("a SIGINT, then a SIGTERM during a fatal stop (held by a reload) wait for it: one stop, exit 1, flannel.1 removed", async () => {
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
      // Before, a first SIGINT during the fatal stop gave it up at once.
      a2.process!.kill("SIGINT");
      a2.process!.kill("SIGTERM");
      await eventually(
        "the SIGINT and the SIGTERM logged",
        () => coded(a2.dir, since, "CLI_STOP_IN_PROGRESS"),
        (r) => r.length === 2,
        10_000,
      );
      await release();
      // Before, the SIGTERM's stop exited 0 while the fatal one was removing flannel.1.
      expect(await env.agents.exited(a2, 30_000)).toBe(1);
      expect(await overlayDevices(a2.host)).toEqual([]);
      expect((await coded(a2.dir, since, "CLI_STOP_IN_PROGRESS")).map((r) => r.signal).sort()).toEqual([
        "SIGINT",
        "SIGTERM",
      ]);
    } finally {
      await env.agents.stop(twin);
    }
  }, 180_000);

  it("with --keep-on-exit, a swap's failed stop, then the name taken: nothing is kept, so the stop sweeps; its failure is logged before exit 1", async () => {
    const [a1, a2] = env.all;
    const path = env.agents.netConfPath(a2);
    const text = await readFile(path, "utf8");
    const macFile = join(a2.stateDir, VTEP_MAC_FILE);
    const mac = await readFile(macFile, "utf8");
    const twinDir = join(a1.dir, "twin-kept");
    const twin: LabAgent = { host: a1.host, dir: twinDir, stateDir: twinDir };
    if (!a1.process || a1.process.exitCode !== null || a1.process.signalCode !== null) env.agents.start(a1);
    await env.agents.stop(a2);
    env.agents.start(a2, ["--keep-on-exit"]);
    await env.agents.waitFor(a2, "its peer", (s) => s.ready && s.peers.length === 1, 60_000);
    const since = await env.agents.logSize(a2);
    try {
      // flannel.1's removal stays refused: the sweep fails too.
      await failSwap(a2, since);
      await env.agents.stop(a1, "SIGKILL");
      await env.agents.waitFor(a2, "joining again", (s) => s.join.state === "rejoining", 60_000);
      await mkdir(twinDir);
      await writeFile(join(twinDir, "net-conf.json"), JSON.stringify(netConf("vxlan")));
      env.agents.start(twin, ["--node-name", "host2", "--subnet-seeds", "ghost"], []);
      expect(await env.agents.exited(a2, 60_000)).toBe(1);
      // Before, the sweep was skipped for --keep-on-exit although the name conflict kept nothing.
      const swept = await coded(a2.dir, since, "AGENT_STALE_DEVICE");
      expect(swept.map((r) => r.command)).toEqual(["link del flannel.1"]);
      // Before, the fatal stop's exit came before its rejection was logged.
      const [incomplete] = await coded(a2.dir, since, "AGENT_STOP_INCOMPLETE");
      expect(incomplete.msg).toMatch(/remove what is left by hand/);
    } finally {
      await ip.refuse();
      await env.agents.stop(twin);
      await rm(twinDir, { recursive: true, force: true });
      await writeFile(macFile, mac);
      await writeFile(path, text);
    }
    // The next start takes over what was left.
    env.agents.start(a1);
    await startAgain(a2);
  }, 240_000);

  it("with --keep-on-exit, a SIGTERM's stop that finds the name taken while it stops gossip removes subnet.env at once, then flannel.1, and exits 1", async () => {
    const [a1, a2] = env.all;
    const path = env.agents.netConfPath(a2);
    const text = await readFile(path, "utf8");
    const twinDir = join(a1.dir, "twin-late");
    const twin: LabAgent = { host: a1.host, dir: twinDir, stateDir: twinDir };
    const [host1, port] = env.agents.gossipAddr(a1).split(":");
    const membersFile = join(a2.stateDir, MEMBERS_FILE);
    const envBefore = a2.env;
    await env.agents.stop(a2);
    // No members saved: a save (of host1) is due, the periodic one a minute after the start or the
    // stop's, and waits in the pool held below, so that gossip runs on while the stop is in
    // control.stop().
    await rm(membersFile, { force: true });
    a2.env = { ...envBefore, UV_THREADPOOL_SIZE: "1" };
    env.agents.start(a2, ["--keep-on-exit"]);
    await env.agents.waitFor(a2, "its peer", (s) => s.ready && s.peers.length === 1, 60_000);
    const since = await env.agents.logSize(a2);
    let blocked = false;
    try {
      // Held from seconds after the start on, before the first periodic save can end: however long
      // the join rounds below back off, every save waits, the stop's behind it.
      const release = await holdPool(a2, text);
      expect(
        existsSync(membersFile),
        "the periodic members save (a minute after the start) ended before the pool was held: the stop would not wait in control.stop()",
      ).toBe(false);
      // host1's gossip port answers as another node named host2 (the twin) once host2's agent is
      // rejoining; it is stopped (SIGSTOP) before host2 can reach it, so that a join round's
      // push-pull waits for its answer.
      await env.agents.stop(a1, "SIGKILL");
      await env.agents.waitFor(a2, "joining again", (s) => s.join.state === "rejoining", 60_000);
      await a2.host.ns.ip(`route add prohibit ${host1}/32`);
      blocked = true;
      await mkdir(twinDir);
      await writeFile(join(twinDir, "net-conf.json"), JSON.stringify(netConf("vxlan")));
      env.agents.start(twin, ["--node-name", "host2", "--subnet-seeds", "ghost"], []);
      await eventually(
        "the twin's gossip port",
        () => a1.host.ns.exec(["ss", "-Htln", "sport", "=", `:${port}`]),
        (out) => out.trim() !== "",
        30_000,
      );
      twin.process!.kill("SIGSTOP");
      await a2.host.ns.ip(`route del prohibit ${host1}/32`);
      blocked = false;
      // The rounds refused meanwhile back off up to 30 s.
      await eventually(
        "a join round's push-pull to the stopped twin",
        () => a2.host.ns.exec(["ss", "-Htn", "state", "established", "dst", `${host1}:${port}`]),
        (out) => out.trim() !== "",
        60_000,
      );
      a2.process!.kill("SIGTERM");
      // Answered after the stop's first steps ran (up to the save, in the same turn of the loop).
      await eventually(
        "the stop under way",
        () => agentRequest(a2.stateDir, "GET", "/readyz").catch((err: Error) => err.message),
        (body) => body === "agent answered 503: not ready: stopping",
        5_000,
      );
      // The twin answers: host2's join round finds its name taken while its stop is in control.stop().
      twin.process!.kill("SIGCONT");
      await eventually(
        "the name conflict",
        () => coded(a2.dir, since, "GOSSIP_NAME_CONFLICT"),
        (r) => r.some((l) => l.msg === "this node cannot go on running"),
        10_000,
      );
      // Gone at the conflict, the stop still held in its save; before, only once control.stop()
      // ended, the CNI plugin handing out the winner's addresses meanwhile.
      expect(existsSync(env.agents.subnetFile(a2))).toBe(false);
      await release();
      // Before, the SIGTERM's stop exited 0 although the name was taken.
      expect(await env.agents.exited(a2, 30_000)).toBe(1);
      // Before, the keep decided as the stop began held: the winner's subnet stayed in subnet.env.
      expect(existsSync(env.agents.subnetFile(a2))).toBe(false);
      expect(await overlayDevices(a2.host)).toEqual([]);
    } finally {
      // a2 first: with no reader left (a2 crashed), a write to the FIFO would wait for good.
      await env.agents.stop(a2, "SIGKILL");
      a2.env = envBefore;
      await rm(path, { force: true });
      await writeFile(path, text);
      if (blocked) await a2.host.ns.ip(`route del prohibit ${host1}/32`);
      twin.process?.kill("SIGCONT");
      await env.agents.stop(twin);
      await rm(twinDir, { recursive: true, force: true });
    }
    env.agents.start(a1);
    await startAgain(a2);
  }, 300_000);
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
  /** Starts a stopped agent kept with IPv6 switched off in its config; returns its log size before. */
  const startIpv4Only = async (a: LabAgent) => {
    const since = await env.agents.logSize(a);
    await writeFile(
      env.agents.netConfPath(a),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", DirectRouting: true } }),
    );
    env.agents.start(a, ["--keep-on-exit"]);
    await env.agents.waitReady(a);
    return since;
  };

  it("flannel-v6.1 and DirectRouting's IPv6 routes kept by the stop go at the IPv4-only start", async () => {
    const a2 = env.all[1];
    await env.agents.stop(a2);
    expect((await overlayDevices(a2.host)).sort()).toEqual(["flannel-v6.1", "flannel.1"]);
    expect(await gatewayRoutes6(a2)).toHaveLength(1);
    const since = await startIpv4Only(a2);
    // Before, the sweep looked only in the IPv4 network: flannel-v6.1 and the route stayed for good.
    expect(await overlayDevices(a2.host)).toEqual(["flannel.1"]);
    expect(await gatewayRoutes6(a2)).toEqual([]);
    expect((await coded(a2.dir, since, "AGENT_STALE_DEVICE")).map((r) => r.dev)).toEqual(["flannel-v6.1"]);
    expect(await coded(a2.dir, since, "AGENT_STALE_ROUTE")).toHaveLength(1);
  }, 90_000);

  it("the sweep takes only a kept restart's gateway routes, once: an admin's in the old network stay, at the start and at a swap", async () => {
    const a2 = env.all[1];
    const dev = a2.host.underlayIf;
    // An admin's routes in the network no longer in the config, each unlike what weft or flannel
    // write in one way: another protocol, longer or shorter than a node subnet, another metric,
    // via the interface's default gateway.
    const admin = [
      "2001:2:0:8010::/64 via 2001:2::50 proto static",
      "2001:2:0:8011::/80 via 2001:2::50",
      "2001:2:0:8020::/60 via 2001:2::50",
      "2001:2:0:8012::/64 via 2001:2::50 metric 100",
      "2001:2:0:8013::/64 via 2001:2::51",
    ];
    /** Put after the start: like flannel's, but the start's sweep is over. */
    const later = "2001:2:0:8014::/64 via 2001:2::50";
    const routes = [...admin, later];
    await writeFile(env.agents.netConfPath(a2), JSON.stringify(dual));
    await env.agents.stop(a2);
    env.agents.start(a2, ["--keep-on-exit"]);
    await env.agents.waitFor(a2, "both families' peer", (s) => s.ready && s.peers6?.length === 1, 60_000);
    await env.agents.stop(a2);
    expect(await gatewayRoutes6(a2)).toHaveLength(1);
    try {
      await a2.host.ns.ip(`-6 route add default via 2001:2::51 dev ${dev}`);
      for (const r of admin) await a2.host.ns.ip(`-6 route add ${r} dev ${dev}`);
      const since = await startIpv4Only(a2);
      // DirectRouting's route to host1's IPv6 subnet went; before, the admin's went with it.
      expect(await coded(a2.dir, since, "AGENT_STALE_ROUTE")).toHaveLength(1);
      expect(await gatewayRoutes6(a2)).toHaveLength(admin.length);
      await a2.host.ns.ip(`-6 route add ${later} dev ${dev}`);
      await writeFile(env.agents.netConfPath(a2), JSON.stringify({ Network: NETWORK, Backend: { Type: "host-gw" } }));
      env.agents.reload(a2);
      await env.agents.waitFor(a2, "the swap to host-gw", (s) => s.ready && s.backend?.type === "host-gw", 60_000);
      // Before, each swap's start swept the old network again.
      expect(await gatewayRoutes6(a2)).toHaveLength(routes.length);
      expect(await coded(a2.dir, since, "AGENT_STALE_ROUTE")).toHaveLength(1);
    } finally {
      for (const r of [...routes, "default via 2001:2::51"])
        await a2.host.ns.ip(`-6 route del ${r.replace(/ proto static/, "")} dev ${dev}`).catch(() => undefined);
    }
  }, 120_000);
});
