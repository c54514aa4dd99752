// A real agent whose TUN device is deleted under it: wasm-vxlan's IPv4 device `weft.1`, its IPv6
// one `weft-v6.1` and its IPv4 one beside a running IPv6 one (dual-stack), the udp backend's `flannel0`. The dataplane's workers end
// (DATAPLANE_TUN_GONE), and the agent, as a kernel backend's reconcile makes a deleted device
// again, goes not ready and runs a new backend of that family (device, queue pairs, peers) by
// itself, trying again with backoff while that fails; pods ping across once it runs, the other
// family's backend runs on untouched, and a stop leaves nothing. Before, the agent stayed ready
// while pod traffic went nowhere. While it is down its peer is told (gossip says it has no backend
// of that family) and drops it from its own dataplane; a new backend whose publish fails
// (subnet.env cannot be written) is published again with backoff. A SIGHUP while one family stays
// down starts that family alone: the other's backend runs on, and no swap is tried.
import { existsSync } from "node:fs";
import { mkdir, rm, rmdir } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import type { AgentStatus, LabAgent } from "../../src/lab/agents.js";
import { formatPrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { STATE_FILE } from "../../src/control/lease/store.js";
import {
  agentLab,
  eventually,
  logRecords,
  NETWORK,
  netConf,
  overlayDevices,
  restartGivingSubnet,
  takeDeviceName,
} from "./support.js";

const MODES = [
  {
    name: "wasm-vxlan's IPv4 device",
    tag: "atg",
    type: "wasm-vxlan",
    device: "weft.1",
    family: 4,
    dual: false,
    port: 8472,
  },
  {
    name: "wasm-vxlan's IPv6 device, dual-stack",
    tag: "atg6",
    type: "wasm-vxlan",
    device: "weft-v6.1",
    family: 6,
    dual: true,
    port: 8472,
  },
  {
    name: "wasm-vxlan's IPv4 device, dual-stack",
    tag: "atg46",
    type: "wasm-vxlan",
    device: "weft.1",
    family: 4,
    dual: true,
    port: 8472,
  },
  { name: "udp's flannel0", tag: "atgu", type: "udp", device: "flannel0", family: 4, dual: false, port: 8285 },
] as const;

describe.skipIf(!canUseNetns()).each(MODES)("an agent whose TUN device is deleted: $name", (mode) => {
  const dual = mode.dual;
  /** The family that stays up while the device's is down (dual-stack). */
  const other = mode.family === 6 ? 4 : 6;
  /** The UDP sockets bound to the backend's port in the agent's namespace: one per queue pair and family. */
  const sockets = async (a: LabAgent) =>
    (await a.host.ns.exec(["ss", "-Huan", "sport", "=", `:${mode.port}`])).split("\n").filter((l) => l.trim() !== "")
      .length;
  const metrics = (a: LabAgent) => agentRequest(a.stateDir, "GET", "/metrics") as Promise<string>;
  /** The control plane's peers of the device's family, and its dataplane's peer table. */
  const peersOf = (s: AgentStatus) => (mode.family === 6 ? (s.peers6 ?? []) : s.peers);
  const peerTable = (s: AgentStatus) => (mode.family === 6 ? s.dataplane6 : s.dataplane)?.peers ?? {};
  /** Pings from a1's pod to a2's and back, over each family the agents carry. */
  const pingBoth = async (a1: LabAgent, a2: LabAgent, families: Array<4 | 6>) => {
    for (const family of families)
      for (const [from, to] of [
        [a1, a2],
        [a2, a1],
      ]) {
        const [p, q] = [from.host.pods[0], to.host.pods[0]];
        expect((await pingWhenRouted(p, family === 6 ? q.addr6! : q.addr)).received, `IPv${family}`).toBe(2);
      }
  };

  const env = agentLab({
    tag: mode.tag,
    hosts: 2,
    ipv6: dual,
    conf: () =>
      dual
        ? {
            Network: NETWORK,
            EnableIPv6: true,
            IPv6Network: formatPrefix6(LAB_POD_NETWORK6),
            Backend: { Type: mode.type, Workers: 1 },
          }
        : netConf(mode.type),
    settled: {
      what: "its peers",
      check: (s) => s.ready && s.peers.length === 1 && (!dual || s.peers6?.length === 1),
    },
  });

  it("goes not ready, runs a new backend of that family once it can, and pods ping across again", async () => {
    const [a1, a2] = env.all;
    const families: Array<4 | 6> = dual ? [4, 6] : [4];
    await pingBoth(a1, a2, families);
    const pairs = await sockets(a1);
    expect(pairs).toBeGreaterThan(0);
    const since = await env.agents.logSize(a1);
    await takeDeviceName(a1.host, mode.device);
    const codes = async () => (await env.agents.errorLines(a1, since)).map((l) => l.code);
    const failures = async () => (await codes()).filter((c) => c === "AGENT_BACKEND_FAILED").length;
    await eventually("the restart to fail", codes, (c) => c.includes("AGENT_BACKEND_RESTART_FAILED"), 20_000);
    // Its peer drops it, from the control plane's peers and from its dataplane's route table:
    // before, gossip kept the old announcement and host2 sent host1's pod traffic into nothing.
    const peerless = await env.agents.waitFor(
      a2,
      `host1 no longer an IPv${mode.family} peer`,
      (s) => peersOf(s).length === 0,
      10_000,
    );
    expect(Object.keys(peerTable(peerless))).toEqual([]);
    // The other family's peer stays.
    if (dual) expect((other === 4 ? peerless.peers : peerless.peers6) ?? []).toHaveLength(1);
    expect(await codes()).toContain("AGENT_BACKEND_FAILED");
    const down = await env.agents.status(a1);
    expect(down.ready).toBe(false);
    expect((down as { waitingFor?: string }).waitingFor).toMatch(
      new RegExp(`^a new IPv${mode.family} ${mode.type} backend: .*${mode.device.replace(".", "\\.")} was deleted`),
    );
    await expect(agentRequest(a1.stateDir, "GET", "/readyz")).rejects.toThrow(/not ready/);
    expect(await metrics(a1)).toMatch(/^weft_ready 0$/m);
    // The other family's dataplane still shows its socket drops (before, none while IPv4's was down).
    if (dual)
      expect(await metrics(a1)).toMatch(
        new RegExp(`^weft_dataplane_socket_drops_total\\{family="${other}"\\} \\d+$`, "m"),
      );
    // The other family's backend carries its pods' traffic meanwhile.
    if (dual) await pingBoth(a1, a2, [other]);
    if (dual && other === 4) {
      // ... and is repaired: a route deleted by hand comes back at a reconcile, the node not
      // ready as it is (before, nothing was reconciled while not ready).
      const routes = () => a1.host.ns.exec(["ip", "-4", "route", "show", "dev", "weft.1"]);
      expect(await routes()).toContain(NETWORK);
      await a1.host.ns.ip(`route del ${NETWORK} dev weft.1`);
      expect(await routes()).not.toContain(NETWORK);
      await eventually("the deleted IPv4 route back while IPv6 is down", routes, (r) => r.includes(NETWORK), 20_000);
      expect((await env.agents.status(a1)).ready).toBe(false);
    }

    await a1.host.ns.ip(`link del ${mode.device}`);
    await env.agents.waitReady(a1, 30_000);
    await pingBoth(a1, a2, families);
    const text = await metrics(a1);
    expect(text).toMatch(/^weft_ready 1$/m);
    expect(text).toMatch(
      new RegExp(`^weft_backend_restarts_total\\{family="${mode.family}"\\} ${await failures()}$`, "m"),
    );
    if (dual) expect(text).not.toMatch(new RegExp(`^weft_backend_restarts_total\\{family="${other}"\\} [1-9]`, "m"));
    // The old dataplane's sockets were closed: the new one's alone are in the reuseport group.
    expect(await sockets(a1)).toBe(pairs);
    expect(Object.keys(peerTable(await env.agents.status(a2)))).toEqual(["host1"]);
  });

  it("a new backend whose publish fails (subnet.env cannot be written) is published again with backoff: ready once the cause is gone, without a restart", async () => {
    const [a1, a2] = env.all;
    const file = env.agents.subnetFile(a1);
    const before = (await env.agents.subnetEnv(a1)).text;
    const since = await env.agents.logSize(a1);
    // An empty directory where subnet.env goes: renaming the new file onto it fails (EISDIR), root
    // or not. The TUN device deleted, the new backend starts at once and only its publish fails.
    await rm(file);
    await mkdir(file);
    await a1.host.ns.ip(`link del ${mode.device}`);
    const failures = async () =>
      (await env.agents.errorLines(a1, since)).filter((l) => l.msg.startsWith("publishing the new backend failed"));
    // Tried again while the cause stays (before, once: the node stayed not ready until a restart).
    const failed = await eventually("the publish to fail twice", failures, (f) => f.length >= 2, 20_000);
    expect(failed.map((l) => l.code)).toEqual(failed.map(() => "AGENT_PUBLISH_FAILED"));
    const down = await env.agents.status(a1);
    expect(down.ready).toBe(false);
    expect((down as { waitingFor?: string }).waitingFor).toMatch(/^publishing the new backend: .*AGENT_PUBLISH_FAILED/);

    await rmdir(file);
    await env.agents.waitReady(a1, 30_000);
    expect((await env.agents.subnetEnv(a1)).text).toBe(before);
    await pingBoth(a1, a2, dual ? [4, 6] : [4]);
  });

  // Defined for the IPv6 device's mode alone (not skipped in the others: a skip reads as a gap).
  if (mode.family === 6)
    it("IPv6 down while the IPv4 subnet is lost and replaced: not ready and no subnet.env until IPv6 runs too", async () => {
      const [a1, a2] = env.all;
      const since = await env.agents.logSize(a1);
      await takeDeviceName(a1.host, mode.device);
      await eventually(
        "the IPv6 restart to fail",
        async () => (await env.agents.errorLines(a1, since)).map((l) => l.code),
        (c) => c.includes("AGENT_BACKEND_RESTART_FAILED"),
        20_000,
      );
      const lost = (await env.agents.status(a1)).subnet!;
      // host2's saved IPv4 ring now says host2 took host1's IPv4 subnet: host1 loses it, leases
      // another and starts its IPv4 backend again, while IPv6's is still down.
      await restartGivingSubnet(env.agents, a2, STATE_FILE, a1.host.name, a2.host.name, false);
      const logged = () => logRecords(a1.dir, since);
      // host1's new IPv4 backend runs once host2 has it as a peer with its new subnet (publish()
      // announces it, even while it returns early).
      const seen = await env.agents.waitFor(
        a2,
        "host1's new IPv4 subnet announced",
        (st) => st.peers.some((p) => p.name === "host1" && p.subnet !== lost),
        60_000,
      );
      const now = seen.peers.find((p) => p.name === "host1")!.subnet;
      // Before, the new IPv4 backend's publish said ready and wrote subnet.env for both families.
      const s = await env.agents.status(a1);
      expect(s.subnet).toBe(now);
      expect(s.ready).toBe(false);
      expect((s as { waitingFor?: string }).waitingFor).toMatch(/^a new IPv6 wasm-vxlan backend: /);
      expect(existsSync(env.agents.subnetFile(a1))).toBe(false);
      await expect(agentRequest(a1.stateDir, "GET", "/readyz")).rejects.toThrow(/not ready/);
      // Pods are told to restart once subnet.env names the new subnet, not before.
      expect((await logged()).map((l) => l.code)).toContain("AGENT_SUBNET_LOST");
      expect((await logged()).map((l) => l.code)).not.toContain("AGENT_SUBNET_REPLACED");

      await a1.host.ns.ip(`link del ${mode.device}`);
      await env.agents.waitReady(a1, 30_000);
      expect((await logged()).filter((l) => l.code === "AGENT_SUBNET_REPLACED")).toEqual([
        expect.objectContaining({ from: lost, to: now }),
      ]);
      // A pod made now gets the new IPv4 subnet and is reached over both families.
      const fresh = await env.lab.addPod(a1.host, env.agents.subnetFile(a1));
      expect((await pingWhenRouted(a2.host.pods[0], fresh.addr)).received).toBe(2);
      expect((await pingWhenRouted(a2.host.pods[0], fresh.addr6!)).received).toBe(2);
    });

  // Defined for the IPv6 device's mode alone (not skipped in the others: a skip reads as a gap).
  if (mode.family === 6)
    it("SIGHUP while IPv6 keeps failing starts IPv6 alone: the IPv4 backend runs on untouched, and no swap is logged", async () => {
      const [a1, a2] = env.all;
      await env.agents.waitReady(a1, 30_000);
      const ifindex = async () =>
        (await a1.host.ns.kernel.ipJson<Array<{ ifindex: number }>>(["link", "show", "dev", "weft.1"]))[0].ifindex;
      const before = await ifindex();
      const since = await env.agents.logSize(a1);
      const logged = () => logRecords(a1.dir, since);
      await takeDeviceName(a1.host, mode.device);
      await eventually(
        "the IPv6 restart to fail",
        async () => (await logged()).map((l) => l.code),
        (c) => c.includes("AGENT_BACKEND_RESTART_FAILED"),
        20_000,
      );
      env.agents.reload(a1);
      // The reload's last word: "reloaded: ..."; before, "reload failed ..." after a swap and its rollback.
      await eventually(
        "the reload to end",
        logged,
        (l) => l.some((r) => /^reload(ed:| failed)/.test(String(r.msg))),
        30_000,
      );
      const codes = (await logged()).map((l) => l.code);
      expect(codes).not.toContain("AGENT_SWAP_START_FAILED");
      expect(codes).not.toContain("AGENT_ROLLBACK_FAILED");
      // Before, the swap stopped the IPv4 backend too (its device went with its routes) and started it twice.
      expect(await ifindex()).toBe(before);
      // host1's newest pod: the first ones hold the IPv4 subnet an earlier test took away.
      const ping = async (family: 4 | 6) => {
        const to = a1.host.pods.at(-1)!;
        return (await pingWhenRouted(a2.host.pods[0], family === 6 ? to.addr6! : to.addr)).received;
      };
      expect(await ping(4)).toBe(2);

      // The cause gone, SIGHUP brings IPv6 back.
      await a1.host.ns.ip(`link del ${mode.device}`);
      env.agents.reload(a1);
      await env.agents.waitReady(a1, 30_000);
      expect(await ping(4)).toBe(2);
      expect(await ping(6)).toBe(2);
      expect(await ifindex()).toBe(before);
    });

  it("a stop leaves nothing", async () => {
    const [a1] = env.all;
    await env.agents.stop(a1);
    expect(a1.process?.exitCode).toBe(0);
    expect(await overlayDevices(a1.host)).toEqual([]);
    expect(await sockets(a1)).toBe(0);
  });
});
