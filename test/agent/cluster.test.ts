// Three real agents, each a separate process in its own lab host's namespace, finding each other
// by gossip: convergence, subnet.env, health and metrics, pod traffic on every backend, drift
// repair, a crash and a restart, backend swaps by SIGHUP (a mixed kernel-vxlan / wasm-vxlan
// cluster on the way), graceful leave, --keep-on-exit and ip-masq. One cluster for all of it,
// since gossip convergence and the first lease take seconds; the steps run in order and each
// starts from the state the one before left.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { LabAgents, type AgentStatus, type LabAgent } from "../../src/lab/agents.js";
import { execPlugin } from "../../src/cni/exec.js";
import { LAB_POD_NETWORK6, LabCluster, labConfList, referencePluginDirs, type LabHost } from "../../src/lab/cluster.js";
import { ipMasqScript } from "../../src/kernel/ipmasq.js";
import { parsePrefix6 } from "../../src/net/ipv6.js";
import { formatIpv4, parsePrefix } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ping } from "../../src/lab/traffic.js";
import {
  allPingsAnswered,
  eventually,
  firstAddress,
  holdNetConf,
  links,
  logRecords,
  netConf,
  NETWORK,
  nftTables,
  OVERLAY_DEVICES,
  overlayDevices,
  pingEveryPair,
  podRoutes,
  POD_MTU,
  vxlanEntries,
  watchKernelEvents,
  type BackendName,
} from "./support.js";

const HEALTHZ_PORT = 10254;
const METRICS_PORT = 10255;

/** `200 <body>` or, for any other answer, the error naming the status code. */
async function answer(a: LabAgent, path: string): Promise<string> {
  return agentRequest(a.dir, "GET", path).then(
    (body) => `200 ${String(body).trim()}`,
    (e: Error) => e.message,
  );
}

/** GET over TCP from inside the host's namespace (the ports are not reachable from here). */
async function tcpGet(h: LabHost, port: number, path: string): Promise<{ status: number; body: string }> {
  const url = `http://${formatIpv4(h.underlayAddr)}:${port}${path}`;
  const out = await h.ns.exec([
    process.execPath,
    "-e",
    `fetch(${JSON.stringify(url)}).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))`,
  ]);
  return JSON.parse(out);
}

const PROTOCOL_EVENTS = [
  "probes",
  "probeFailures",
  "suspicionsRaised",
  "deathsDeclared",
  "refutations",
  "nameConflicts",
  "handlerErrors",
  "streamFailures",
];

/** weft_gossip_protocol_total's samples in a scrape, by event. */
function protocolEvents(text: string): Map<string, number> {
  return new Map(
    [...text.matchAll(/^weft_gossip_protocol_total\{event="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]),
  );
}

describe.skipIf(!canUseNetns())("agent: three agents as separate processes", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let a1: LabAgent, a2: LabAgent, a3: LabAgent;
  let all: LabAgent[];
  /** Each host's subnet, as first leased; it must never change. */
  const subnets = new Map<string, string>();
  const vtepMacs = new Map<string, string>();

  const others = (a: LabAgent) => all.filter((x) => x !== a);
  const peersOf = (s: AgentStatus) => s.peers.map((p) => `${p.name} ${p.subnet} ${p.underlay} ${p.backend}`).sort();
  const expectedPeers = (a: LabAgent, backend: (b: LabAgent) => string) =>
    others(a)
      .map((b) => `${b.host.name} ${subnets.get(b.host.name)} ${formatIpv4(b.host.underlayAddr)} ${backend(b)}`)
      .sort();
  /** Waits until `a` runs `backend`, is ready and has every running other agent as a peer on `peerBackend`. */
  const converged = (a: LabAgent, backend: BackendName, peerBackend: (b: LabAgent) => string = () => backend) =>
    agents.waitFor(
      a,
      `ready on ${backend} with both peers`,
      (s) =>
        s.ready &&
        s.backend?.type === backend &&
        JSON.stringify(peersOf(s)) === JSON.stringify(expectedPeers(a, peerBackend)),
      30_000,
    );
  const subnetEnvText = (a: LabAgent, backend: BackendName, ipMasq: boolean) =>
    `FLANNEL_NETWORK=${NETWORK}\nFLANNEL_SUBNET=${firstAddress(subnets.get(a.host.name)!)}\nFLANNEL_MTU=${POD_MTU[backend]}\nFLANNEL_IPMASQ=${ipMasq}\n`;
  /** vxlan's per-peer route: `<subnet> via <subnet network> dev flannel.1 onlink`. */
  const vxlanRoute = (b: LabAgent) =>
    `${subnets.get(b.host.name)} via ${formatIpv4(parsePrefix(subnets.get(b.host.name)!).addr)} dev flannel.1 onlink`;
  /** Waits until `a` holds no route, neighbour or FDB entry of `gone`'s (separate kernel batches: all three are awaited); its route to the other host stays. */
  const entriesGone = async (a: LabAgent, gone: LabAgent) => {
    const mac = vtepMacs.get(gone.host.name)!;
    const entries = await eventually(
      `${a.host.name} without ${gone.host.name}'s entries`,
      async () => ({ routes: await podRoutes(a.host), ...(await vxlanEntries(a.host)) }),
      (e) => e.routes.length === 1 && !JSON.stringify([e.neighs, e.fdbs]).includes(mac),
    );
    expect(entries.routes).toEqual([vxlanRoute(others(a).find((b) => b !== gone)!)]);
  };
  const hostGwRoute = (b: LabAgent) => `${subnets.get(b.host.name)} via ${formatIpv4(b.host.underlayAddr)} dev eth0`;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "agt", hosts: 3 });
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
    all = agents.agents;
    [a1, a2, a3] = all;
  });

  afterAll(async () => {
    await agents?.stopAll();
    await lab?.destroy();
  });

  it("answers /healthz at once and /readyz with 503 until the lease is held, then 200", async () => {
    // /metrics is on loopback unless asked for: ask for the underlay address, as for a remote scraper.
    agents.start(a1, [
      "--ip-masq",
      "--healthz-port",
      String(HEALTHZ_PORT),
      "--metrics-port",
      String(METRICS_PORT),
      "--metrics-ip",
      formatIpv4(a1.host.underlayAddr),
    ]);
    agents.start(a2);
    agents.start(a3);
    for (const a of all) {
      await eventually(
        `${a.host.name} answering /healthz`,
        () => answer(a, "/healthz"),
        (r) => r.startsWith("200"),
        10_000,
      );
      // A cold start listens 10 s for the cluster's lease ring before taking the seed division:
      // /healthz answers long before any lease is held.
      expect(await answer(a, "/readyz")).toMatch(/answered 503: not ready/);
    }
    expect((await tcpGet(a1.host, HEALTHZ_PORT, "/healthz")).status).toBe(200);
    expect((await tcpGet(a1.host, HEALTHZ_PORT, "/readyz")).status).toBe(503);
    // A SIGHUP while waiting for the lease (a config tool reloading every node) must not end it.
    agents.reload(a2);
    await agents.waitAllReady();
    expect(await agents.logTail(a2, 100)).toContain("SIGHUP while starting");
    for (const a of all) expect(await answer(a, "/readyz")).toBe("200 ready");
    expect((await tcpGet(a1.host, HEALTHZ_PORT, "/readyz")).status).toBe(200);
  });

  it("converges: each agent has the other two as peers with their subnets; the leases are distinct", async () => {
    for (const a of all) {
      const s = await agents.status(a);
      subnets.set(a.host.name, s.subnet!);
      vtepMacs.set(a.host.name, s.backend!.vtepMac!);
      expect(parsePrefix(s.subnet!).len).toBe(24);
      expect(s.subnet!.startsWith("198.19.")).toBe(true);
    }
    expect(new Set(subnets.values()).size).toBe(3);
    for (const a of all) {
      const s = await converged(a, "vxlan");
      expect(s.members.map((m) => `${m.name} ${m.state}`).sort()).toEqual([
        "host1 alive",
        "host2 alive",
        "host3 alive",
      ]);
    }
    // A clean start says nothing at error level (the control plane once logged a contained
    // ReferenceError on every start).
    for (const a of all) expect(await agents.errorLines(a), a.host.name).toEqual([]);
  });

  it("writes subnet.env as flannel does, byte for byte", async () => {
    for (const a of all) expect((await agents.subnetEnv(a)).text).toBe(subnetEnvText(a, "vxlan", a === a1));
  });

  it("vxlan: programs flannel.1 and each peer's neighbour, FDB entry and onlink route; pods ping across hosts", async () => {
    for (const a of all) {
      const dev = (await links(a.host)).get("flannel.1");
      expect(dev?.mtu).toBe(1450);
      expect(dev?.address).toBe(vtepMacs.get(a.host.name));
      // A peer shows in /status as soon as gossip brings it; its kernel entries follow a moment later.
      await eventually(
        `${a.host.name}'s routes to both peers`,
        () => podRoutes(a.host),
        (r) => r.length === 2,
        10_000,
      );
      expect(await podRoutes(a.host)).toEqual(others(a).map(vxlanRoute).sort());
      expect(await vxlanEntries(a.host)).toEqual({
        neighs: others(a)
          .map(
            (b) => `${formatIpv4(parsePrefix(subnets.get(b.host.name)!).addr)} ${vtepMacs.get(b.host.name)} flannel.1`,
          )
          .sort(),
        fdbs: others(a)
          .map((b) => `${vtepMacs.get(b.host.name)} ${formatIpv4(b.host.underlayAddr)} flannel.1`)
          .sort(),
      });
    }
    await agents.addPods(1);
    expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
  });

  it("--ip-masq: host1 has weft's nftables table, the others none", async () => {
    expect(await nftTables(a1.host)).toEqual(["ip weft"]);
    expect(await nftTables(a2.host)).toEqual([]);
  });

  it("exports members, lease and gossip messages on /metrics (unix socket and --metrics-port)", async () => {
    for (const text of [
      String(await agentRequest(a1.dir, "GET", "/metrics")),
      (await tcpGet(a1.host, METRICS_PORT, "/metrics")).body,
    ]) {
      expect(text).toMatch(/^weft_members\{state="alive"\} 3$/m);
      expect(text).toContain(`weft_lease{subnet="${subnets.get("host1")}"} 1`);
      expect(text).toMatch(/^weft_gossip_messages_total\{direction="sent",kind="\w+"\} [1-9]\d*$/m);
      expect(text).toMatch(/^weft_gossip_messages_total\{direction="received",kind="\w+"\} [1-9]\d*$/m);
      // The failure detector's events, every one shown from the start (0 where none happened).
      expect([...protocolEvents(text).keys()]).toEqual(PROTOCOL_EVENTS);
      expect(protocolEvents(text).get("probes")).toBeGreaterThan(0);
    }
  });

  it("puts back a peer route deleted by hand within 10 s (reconcile)", async () => {
    const route = vxlanRoute(a3);
    await a2.host.ns.ip(`route del ${subnets.get("host3")} dev flannel.1`);
    expect(await podRoutes(a2.host)).not.toContain(route);
    await eventually(
      "the deleted route back",
      () => podRoutes(a2.host),
      (r) => r.includes(route),
      10_000,
    );
    expect((await agents.status(a2)).backendCounters?.driftRepairs).toBeGreaterThanOrEqual(1);
  });

  it("SIGKILL: once the node is declared dead, the others drop its peer, route, neighbour and FDB entry", async () => {
    await agents.stop(a3, "SIGKILL");
    for (const a of [a1, a2]) {
      await agents.waitFor(
        a,
        "host3 dead and no longer a peer",
        (s) =>
          s.members.some((m) => m.name === "host3" && m.state === "dead") && !s.peers.some((p) => p.name === "host3"),
      );
      await entriesGone(a, a3);
    }
    // What the failure detectors did shows on /metrics: probes unanswered, a suspicion, a death
    // declared (by one of the two at least: the other may have heard it first).
    const events = await Promise.all(
      [a1, a2].map(async (a) => protocolEvents(String(await agentRequest(a.dir, "GET", "/metrics")))),
    );
    const sum = (event: string) => events.reduce((n, e) => n + (e.get(event) ?? 0), 0);
    expect({
      probeFailures: sum("probeFailures") > 0,
      suspicionsRaised: sum("suspicionsRaised") > 0,
      deathsDeclared: sum("deathsDeclared") > 0,
    }).toEqual({
      probeFailures: true,
      suspicionsRaised: true,
      deathsDeclared: true,
    });
  });

  it("restarted after SIGKILL: the same subnet and VTEP MAC, and traffic again", async () => {
    const before = (await agents.subnetEnv(a3)).text;
    agents.start(a3);
    await agents.waitReady(a3);
    const s = await agents.status(a3);
    expect(s.subnet).toBe(subnets.get("host3"));
    expect(s.backend?.vtepMac).toBe(vtepMacs.get("host3"));
    expect((await links(a3.host)).get("flannel.1")?.address).toBe(vtepMacs.get("host3"));
    expect((await agents.subnetEnv(a3)).text).toBe(before);
    for (const a of all) await converged(a, "vxlan");
    await eventually(
      "host3's route back on host1",
      () => podRoutes(a1.host),
      (r) => r.includes(vxlanRoute(a3)),
    );
    expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
  });

  it("SIGHUP swaps host2 to wasm-vxlan: flannel.1 and its routes gone, weft.1 up, subnet kept, peers told; the mixed cluster pings", async () => {
    // Kernel vxlan programmed far more than wasm-vxlan will: the counter keeps what it did.
    const programmed = async () =>
      Number(
        /^weft_kernel_programming_total\{result="ok"\} (\d+)$/m.exec(
          String(await agentRequest(a2.dir, "GET", "/metrics")),
        )?.[1],
      );
    const before = await programmed();
    expect(before).toBeGreaterThan(0);
    await writeFile(agents.netConfPath(a2), JSON.stringify(netConf("wasm-vxlan")));
    agents.reload(a2);
    const peerBackend = (b: LabAgent) => (b === a2 ? "wasm-vxlan" : "vxlan");
    const s = await converged(a2, "wasm-vxlan", peerBackend);
    expect(await programmed()).toBeGreaterThanOrEqual(before);
    expect(s.subnet).toBe(subnets.get("host2"));
    expect(s.backend?.vtepMac).toBe(vtepMacs.get("host2")); // peers' neighbour and FDB entries stay right
    expect(await overlayDevices(a2.host)).toEqual(["weft.1"]);
    expect(await podRoutes(a2.host)).toEqual([`${NETWORK} dev weft.1`]);
    expect(await vxlanEntries(a2.host)).toEqual({ neighs: [], fdbs: [] });
    expect((await agents.subnetEnv(a2)).text).toBe(subnetEnvText(a2, "wasm-vxlan", false));
    for (const a of [a1, a3]) await converged(a, "vxlan", peerBackend);
    expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
  });

  it("a backend that cannot start on SIGHUP leaves the node on the one it had", async () => {
    // udp on the gossip port: the dataplane's socket cannot bind.
    await writeFile(
      agents.netConfPath(a2),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "udp", Port: 7946, Workers: 1 } }),
    );
    const swapAt = await agents.logSize(a2);
    agents.reload(a2);
    const reloadFailed = (l: { msg: string }) => l.msg.startsWith("reload failed; keeping the running config");
    const failures = await eventually(
      "host2's fallback logged",
      () => agents.errorLines(a2, swapAt),
      (e) =>
        e.some((l) => l.msg.includes("the udp backend failed to start; going back to wasm-vxlan")) &&
        e.some(reloadFailed),
      10_000,
    );
    // Both lines carry a code (before, neither did): the agent's, and the start error's own at the top.
    expect(failures.find((l) => l.msg.includes("going back to"))?.code).toBe("AGENT_SWAP_START_FAILED");
    expect(failures.find(reloadFailed)?.code).toMatch(/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/);
    const s = await converged(a2, "wasm-vxlan", (b) => (b === a2 ? "wasm-vxlan" : "vxlan"));
    expect(s.subnet).toBe(subnets.get("host2"));
    expect(await overlayDevices(a2.host)).toEqual(["weft.1"]);
    expect((await agents.subnetEnv(a2)).text).toBe(subnetEnvText(a2, "wasm-vxlan", false));
    expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
  });

  it("a SIGHUP whose Backend only writes out the defaults in force swaps nothing; weft status shows them", async () => {
    const inForce = (await agents.status(a2)).settings.backend as Record<string, unknown>;
    // The dataplane's own defaults, filled in for this host (its worker count follows the cores).
    expect(inForce).toMatchObject({
      Type: "wasm-vxlan",
      Workers: expect.any(Number),
      QueuesPerWorker: 4,
      FlowQueue: true,
    });
    const log = async () => (await readFile(join(a2.dir, "agent.log"), "utf8")).split("\n");
    const count = (lines: string[], text: string) => lines.filter((l) => l.includes(text)).length;
    const before = await log();
    await writeFile(agents.netConfPath(a2), JSON.stringify({ Network: NETWORK, Backend: inForce }));
    agents.reload(a2);
    const after = await eventually(
      "host2's reload done",
      log,
      (l) => count(l, "the backend in force is the same") > count(before, "the backend in force is the same"),
      10_000,
    );
    // Before, the two texts differed (key order, defaults written out) and the dataplane was swapped for itself.
    expect(count(after, "swapping backend")).toBe(count(before, "swapping backend"));
  });

  it("exports the userspace dataplane's packets on /metrics", async () => {
    const text = String(await agentRequest(a2.dir, "GET", "/metrics"));
    // Since the fallback restarted host2's dataplane, its pod sent 6 pings and answered the 6 of
    // the other pods: at least 12 packets each way.
    expect(
      Number(/^weft_dataplane_packets_total\{family="4",direction="tx",verdict="FORWARD"\} (\d+)$/m.exec(text)?.[1]),
    ).toBeGreaterThanOrEqual(12);
    expect(
      Number(/^weft_dataplane_packets_total\{family="4",direction="rx",verdict="FORWARD"\} (\d+)$/m.exec(text)?.[1]),
    ).toBeGreaterThanOrEqual(12);
    // Offloads are on by default and this kernel has them all (the reason would be in /status).
    expect(text).toMatch(/^weft_dataplane_offloads\{backend="wasm-vxlan",family="4"\} 1$/m);
    // No IPsec on the underlay: the kernel refused no UDP GSO send.
    expect(text).toMatch(/^weft_dataplane_udp_gso_refused_sockets\{backend="wasm-vxlan",family="4"\} 0$/m);
    expect(text).toMatch(/^weft_dataplane_offload_segments_total\{family="4",direction="tx"\} \d+$/m);
  });

  it("a swap whose way back fails too: AGENT_ROLLBACK_FAILED, not ready, no device left; the way back is tried again with backoff, and host2 comes back by itself once the cause is gone", async () => {
    // Every VXLAN backend, kernel or userspace, reads the VTEP MAC file as it starts: a damaged one
    // fails the new backend and the way back, while the running one (its MAC loaded) goes on.
    const macFile = join(a2.stateDir, "vtep-mac");
    const mac = await readFile(macFile, "utf8");
    const inForce = await readFile(agents.netConfPath(a2), "utf8");
    const since = await agents.logSize(a2);
    await writeFile(macFile, "not a MAC\n");
    await writeFile(agents.netConfPath(a2), JSON.stringify(netConf("vxlan")));
    agents.reload(a2);
    const errors = await eventually(
      "host2's rollback failure logged",
      () => agents.errorLines(a2, since),
      (e) => e.some((l) => l.code === "AGENT_ROLLBACK_FAILED"),
      10_000,
    );
    expect(errors.map((l) => l.code)).toContain("AGENT_ROLLBACK_FAILED");
    // It says why, and what brings it back (it said "swapping the backend" before).
    expect(await answer(a2, "/readyz")).toMatch(
      /answered 503: not ready: no backend for IPv4: .*AGENT_ROLLBACK_FAILED.*tried again in \d+ ms.*send SIGHUP/,
    );
    expect((await agents.status(a2)).ready).toBe(false);
    expect(await overlayDevices(a2.host)).toEqual([]);
    // Its peers are told it has no backend and drop their routes and entries to it, so that their
    // pods' traffic to host2 finds no route rather than going into nothing (before, gossip kept its
    // old announcement, and their routes, for as long as it stayed down).
    for (const a of [a1, a3]) {
      await agents.waitFor(a, "host2 no longer a peer", (s) => !s.peers.some((p) => p.name === "host2"), 10_000);
      await entriesGone(a, a2);
    }
    // The way back is tried again meanwhile (before, nothing happened until a SIGHUP).
    await eventually(
      "host2's way back tried again",
      () => agents.errorLines(a2, since),
      (e) => e.some((l) => l.code === "AGENT_BACKEND_RESTART_FAILED"),
      10_000,
    );
    // The cause gone, no SIGHUP: the next try brings back the backend in force (the backoff has
    // reached some 8–16 s by now).
    await writeFile(macFile, mac);
    await writeFile(agents.netConfPath(a2), inForce);
    const s = await agents.waitFor(
      a2,
      "ready on wasm-vxlan again, without a SIGHUP",
      (st) =>
        st.ready &&
        st.backend?.type === "wasm-vxlan" &&
        JSON.stringify(peersOf(st)) === JSON.stringify(expectedPeers(a2, (b) => (b === a2 ? "wasm-vxlan" : "vxlan"))),
      60_000,
    );
    expect(s.subnet).toBe(subnets.get("host2"));
    expect(s.backend?.vtepMac).toBe(vtepMacs.get("host2"));
    expect(await overlayDevices(a2.host)).toEqual(["weft.1"]);
    expect((await agents.subnetEnv(a2)).text).toBe(subnetEnvText(a2, "wasm-vxlan", false));
    for (const a of [a1, a3])
      await eventually(
        `${a.host.name}'s entries to host2 back`,
        async () => ({ routes: await podRoutes(a.host), ...(await vxlanEntries(a.host)) }),
        (e) => e.routes.includes(vxlanRoute(a2)) && e.fdbs.some((f) => f.startsWith(vtepMacs.get("host2")!)),
      );
    expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
  });

  it("a SIGHUP whose restart fails keeps the backoff: the retry that came due meanwhile, queued behind it, does not run at once", async () => {
    const macFile = join(a2.stateDir, "vtep-mac");
    const mac = await readFile(macFile, "utf8");
    const inForce = await readFile(agents.netConfPath(a2), "utf8");
    const since = await agents.logSize(a2);
    const failures = async () =>
      (await logRecords(a2.dir, since)).filter((r) => r.code === "AGENT_BACKEND_RESTART_FAILED");
    // As above: the swap and its way back fail, and the way back is retried with backoff.
    await writeFile(macFile, "not a MAC\n");
    await writeFile(agents.netConfPath(a2), JSON.stringify(netConf("vxlan")));
    agents.reload(a2);
    await eventually("a retry 2 s away", failures, (f) => f.some((r) => Number(r.retryInMs) >= 2000), 20_000);
    // A SIGHUP with the config in force, held while it reads net-conf.json, until the pending
    // retry came due and queued behind it.
    const release = await holdNetConf(agents, a2, inForce);
    let released = false;
    try {
      const heldSince = await agents.logSize(a2);
      agents.reload(a2);
      // The precondition, asserted: the pending retry came due while the SIGHUP held the queue (a
      // sleep until its due time could, under load, release the SIGHUP first and pass without the race).
      await eventually(
        "the pending retry due, queued behind the held SIGHUP",
        async () =>
          (await logRecords(a2.dir, heldSince)).filter((r) => String(r.msg).startsWith("the backend restart is due")),
        (r) => r.length >= 1,
        40_000,
      );
      const held = (await failures()).length;
      released = true;
      await release();
      const [sighup, next] = await eventually(
        "the SIGHUP's try and the next one",
        async () => (await failures()).slice(held),
        (f) => f.length >= 2,
        40_000,
      );
      // Before, the queued retry ran right after the SIGHUP's (some milliseconds later).
      expect(Number(next.time) - Number(sighup.time)).toBeGreaterThanOrEqual(Number(sighup.retryInMs) / 2);
    } finally {
      // Even on a failure: the reload reading the FIFO holds the agent, and its stop, until then.
      if (!released) await release();
      await writeFile(macFile, mac);
      agents.reload(a2);
      await converged(a2, "wasm-vxlan", (b) => (b === a2 ? "wasm-vxlan" : "vxlan"));
    }
  });

  it("a swap whose way back cannot publish (a directory in subnet.env's place): a SIGHUP with the config in force publishes it, before the pending retry", async () => {
    const file = agents.subnetFile(a2);
    const before = await readFile(file, "utf8");
    const inForce = await readFile(agents.netConfPath(a2), "utf8");
    const since = await agents.logSize(a2);
    // Renaming the new subnet.env onto an empty directory fails (EISDIR), root or not; udp on the
    // gossip port fails the swap (its socket cannot bind), and the way back runs but cannot publish.
    await rm(file);
    await mkdir(file);
    await writeFile(
      agents.netConfPath(a2),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "udp", Port: 7946, Workers: 1 } }),
    );
    agents.reload(a2);
    const records = await eventually(
      "the publish retried, 8 s away",
      () => logRecords(a2.dir, since),
      (r) => r.some((x) => x.code === "AGENT_PUBLISH_FAILED" && Number(x.retryInMs) >= 8000),
      30_000,
    );
    expect(records.map((r) => r.code)).toContain("AGENT_ROLLBACK_FAILED");
    const pending = records.filter((r) => r.code === "AGENT_PUBLISH_FAILED").at(-1)!;
    await rmdir(file);
    await writeFile(agents.netConfPath(a2), inForce);
    agents.reload(a2);
    await converged(a2, "wasm-vxlan", (b) => (b === a2 ? "wasm-vxlan" : "vxlan"));
    const ready = (await logRecords(a2.dir, since)).find((r) => r.msg === "ready")!;
    // Before, that SIGHUP published nothing (no family was down): the retry did, once its wait ran out.
    expect(Number(ready.time)).toBeLessThan(Number(pending.time) + Number(pending.retryInMs));
    expect(await readFile(file, "utf8")).toBe(before);
  });

  it.each(["wasm-vxlan", "udp", "host-gw", "vxlan"] as const)(
    "SIGHUP swaps every host to %s: the old devices and routes go, the new ones come, subnets stay, pods ping",
    async (backend) => {
      for (const a of all) {
        await writeFile(agents.netConfPath(a), JSON.stringify(netConf(backend)));
        agents.reload(a);
      }
      for (const a of all) {
        const s = await converged(a, backend);
        expect(s.subnet).toBe(subnets.get(a.host.name));
        expect((await agents.subnetEnv(a)).text).toBe(subnetEnvText(a, backend, a === a1));
      }
      for (const a of all) {
        const routes = {
          vxlan: others(a).map(vxlanRoute).sort(),
          "host-gw": others(a).map(hostGwRoute).sort(),
          udp: [`${NETWORK} dev flannel0`],
          "wasm-vxlan": [`${NETWORK} dev weft.1`],
        }[backend];
        // Peer routes of kernel backends follow the ready state by one programming round.
        await eventually(
          `${a.host.name}'s routes for ${backend}`,
          () => podRoutes(a.host),
          (r) => JSON.stringify(r) === JSON.stringify(routes),
        );
        expect(await overlayDevices(a.host)).toEqual(OVERLAY_DEVICES[backend]);
        if (backend !== "vxlan") expect(await vxlanEntries(a.host)).toEqual({ neighs: [], fdbs: [] });
      }
      expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
    },
    90_000,
  );

  it("SIGHUP with Backend.Learning true: host2's flannel.1 comes back with learning on, its subnet kept; pods ping", async () => {
    await writeFile(
      agents.netConfPath(a2),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", Learning: true } }),
    );
    agents.reload(a2);
    const learning = async () =>
      // All links: flannel.1 is briefly gone while the backend is swapped.
      (
        await a2.host.ns.kernel.ipJson<Array<{ ifname: string; linkinfo?: { info_data?: { learning?: boolean } } }>>([
          "-details",
          "link",
          "show",
        ])
      ).find((l) => l.ifname === "flannel.1")?.linkinfo?.info_data?.learning;
    await eventually("host2's flannel.1 with learning on", learning, (l) => l === true, 10_000);
    expect((await converged(a2, "vxlan")).subnet).toBe(subnets.get("host2"));
    expect(await pingEveryPair(lab.hosts)).toEqual(allPingsAnswered(lab.hosts));
  });

  it("SIGTERM: a graceful leave (the others see host3 as left, not dead), its devices, routes and subnet.env removed (CNI STATUS says not available), nothing logged at error level", async () => {
    const since = await agents.logSize(a3);
    const cniStatus = () =>
      execPlugin(
        "flannel",
        { ...labConfList(lab.hostDir(a3.host), agents.subnetFile(a3)).plugins[0], name: "cbr0", cniVersion: "1.1.0" },
        { command: "STATUS", path: [join(lab.workDir, "bin"), ...referencePluginDirs()] },
        { wrap: a3.host.ns.wrap([]) },
      );
    expect(await cniStatus()).toBeUndefined();
    await agents.stop(a3, "SIGTERM");
    expect(a3.process?.exitCode).toBe(0);
    expect(await agents.errorLines(a3, since)).toEqual([]);
    // The node left: no pod may get an address of it.
    expect(existsSync(agents.subnetFile(a3))).toBe(false);
    await expect(cniStatus()).rejects.toMatchObject({ cniCode: 50 });
    expect(await overlayDevices(a3.host)).toEqual([]);
    expect(await podRoutes(a3.host)).toEqual([]);
    expect(await vxlanEntries(a3.host)).toEqual({ neighs: [], fdbs: [] });
    for (const a of [a1, a2]) {
      // Well within the time a crash takes to be declared dead: the leave message says it.
      const s = await agents.waitFor(
        a,
        "host3 gone from the peers",
        (x) => !x.peers.some((p) => p.name === "host3"),
        5000,
      );
      expect(s.members.find((m) => m.name === "host3")?.state).toBe("left");
      await eventually(
        `${a.host.name} without a route to host3`,
        () => podRoutes(a.host),
        (r) => !r.includes(vxlanRoute(a3)),
      );
    }
  });

  it("--keep-on-exit: flannel.1 and its entries stay after SIGTERM, without a leave the peers keep theirs, and a restart changes nothing in the kernel and loses no ping", async () => {
    agents.start(a3, ["--keep-on-exit"]);
    await converged(a3, "vxlan");
    const want = others(a3).map(vxlanRoute).sort();
    await eventually(
      "host3's peer routes",
      () => podRoutes(a3.host),
      (r) => JSON.stringify(r) === JSON.stringify(want),
    );
    // host3 left in the step before: the others' routes to it come back a gossip round after its
    // announcement, which host3's own view does not wait for (a ping sent before found none).
    for (const a of [a1, a2])
      await eventually(
        `${a.host.name}'s route to host3`,
        () => podRoutes(a.host),
        (r) => r.includes(vxlanRoute(a3)),
      );
    const watches = await Promise.all(all.map((a) => watchKernelEvents(a.host)));
    // host1's pod pings host3's across the stop and the restart (60 at 0.1 s).
    const pings = ping(a1.host.pods[0], a3.host.pods[0].addr, { count: 60, intervalS: 0.1 });
    await agents.stop(a3, "SIGTERM");
    expect(a3.process?.exitCode).toBe(0);
    expect((await links(a3.host)).get("flannel.1")?.address).toBe(vtepMacs.get("host3"));
    expect(await podRoutes(a3.host)).toEqual(want);
    // No leave: a second on, host3 is at most suspect to the others (dead takes a failed probe and
    // at least 3 s of suspicion), and their routes to it stay.
    await sleep(1000);
    for (const a of [a1, a2]) {
      const s = await agents.status(a);
      expect(["alive", "suspect"], a.host.name).toContain(s.members.find((m) => m.name === "host3")?.state);
      expect(await podRoutes(a.host), a.host.name).toContain(vxlanRoute(a3));
    }
    // subnet.env stays across the restart (it names the subnet host3's state dir holds), so pods
    // can start meanwhile, as with flanneld.
    const env = await readFile(agents.subnetFile(a3), "utf8");
    agents.start(a3, ["--keep-on-exit"]);
    let envMissing = 0;
    const watching = (async () => {
      while (
        !(await agents.status(a3).then(
          (s) => s.ready,
          () => false,
        ))
      ) {
        envMissing += await readFile(agents.subnetFile(a3), "utf8").then(
          (t) => (t === env ? 0 : 1),
          () => 1,
        );
        await sleep(100);
      }
    })();
    await converged(a3, "vxlan");
    await watching;
    expect(envMissing, "polls that found subnet.env missing or changed during the restart").toBe(0);
    expect((await pings).received).toBe(60);
    // Not one of the kept entries was deleted, replaced or re-added, on host3 or on its peers.
    for (const [i, w] of watches.entries()) expect(await w.stop("flannel.1"), all[i].host.name).toEqual([]);
  });

  it("--keep-on-exit, then another backend: the kept flannel.1 goes with its routes, and wasm-vxlan takes its port and carries pods", async () => {
    await agents.stop(a3, "SIGTERM");
    expect((await links(a3.host)).has("flannel.1")).toBe(true);
    await writeFile(agents.netConfPath(a3), JSON.stringify(netConf("wasm-vxlan")));
    const since = await agents.logSize(a3);
    agents.start(a3);
    await converged(a3, "wasm-vxlan", () => "vxlan");
    expect(await overlayDevices(a3.host)).toEqual(["weft.1"]);
    expect((await podRoutes(a3.host)).filter((r) => r.includes("flannel.1"))).toEqual([]);
    const log = (await readFile(join(a3.dir, "agent.log"))).subarray(since).toString("utf8");
    expect(log).toMatch(/"code":"AGENT_STALE_DEVICE","dev":"flannel\.1"/);
    expect((await ping(a1.host.pods[0], a3.host.pods[0].addr, { count: 3 })).received).toBe(3);
  });

  it("--ip-masq: the nftables table goes when the agent exits", async () => {
    expect(await nftTables(a1.host)).toEqual(["ip weft"]);
    await agents.stop(a1, "SIGTERM");
    expect(a1.process?.exitCode).toBe(0);
    expect(await nftTables(a1.host)).toEqual([]);
    expect(await overlayDevices(a1.host)).toEqual([]);
  });

  it("weft's tables an earlier run left (--ip-masq, then killed; dual-stack then) go when the node starts without --ip-masq", async () => {
    // An old subnet's rules would masquerade this node's pods to the other nodes'.
    await a1.host.ns.kernel.nft(
      ipMasqScript({ network: parsePrefix(NETWORK), subnet: parsePrefix("198.19.250.0/24") }) +
        ipMasqScript({ network: LAB_POD_NETWORK6, subnet: parsePrefix6("2001:2:0:8001::/64") }),
    );
    expect((await nftTables(a1.host)).sort()).toEqual(["ip weft", "ip6 weft"]);
    agents.start(a1);
    await agents.waitFor(a1, "ready", (s) => s.ready, 30_000);
    expect(await nftTables(a1.host)).toEqual([]);
  });
});
