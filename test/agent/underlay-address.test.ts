// The underlay interface's address changed while the agent runs (DHCP gave another, an admin
// changed it): real vxlan agents in lab namespaces. The agent reads its address once, at start,
// binds gossip to it and tells peers to send to it; once the interface has lost it while a start
// would take another, both for the grace, the agent says so, stops as on SIGTERM (kernel state
// removed) and exits EXIT_UNDERLAY_CHANGED, and its restart joins with the new address. The address
// removed and given back within the grace (a DHCP renew, a link flap that flushed it) changes
// nothing; where a start would fail (no address left, --iface naming the old one), it is warned of
// and the agent waits. Before, the agent went on
// advertising an address nobody held, silently, peers sending pod traffic to it.
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { EXIT_UNDERLAY_CHANGED, UNDERLAY_ADDRESS_GRACE_MS } from "../../src/agent/underlay.js";
import { type LabAgent, running } from "../../src/lab/agents.js";
import { IPMASQ_TABLE } from "../../src/kernel/ipmasq.js";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, eventually, NETWORK, nftTables, overlayDevices, podRoutes, vxlanEntries } from "./support.js";

/** The address DHCP gives host1 in place of 198.18.0.11. */
const NEW = "198.18.0.111";
const FLAGS = ["--reconcile-interval", "1", "--ip-masq"];

/**
 * Waits past the grace for the agent's first BACKEND_UNDERLAY_ADDRESS_* line, which must warn that
 * `addr` is gone as a start would find no underlay (`reason` in its reason); the agent runs on.
 */
async function warnedGone(a: LabAgent, since: number, addr: string, reason = ""): Promise<unknown> {
  const seen = await eventually(
    "a BACKEND_UNDERLAY_ADDRESS_* line",
    () => coded(a.dir, since, "BACKEND_UNDERLAY_ADDRESS"),
    (c) => c.length > 0,
    UNDERLAY_ADDRESS_GRACE_MS + 15_000,
  );
  expect(seen).toEqual([
    expect.objectContaining({
      level: 40,
      code: "BACKEND_UNDERLAY_ADDRESS_GONE",
      iface: "eth0",
      addr,
      reasonCode: "AGENT_UNDERLAY_NOT_FOUND",
      reason: expect.stringContaining(reason),
    }),
  ]);
  await sleep(3000);
  expect(running(a.process)).toBe(true);
  return seen[0];
}

describe.skipIf(!canUseNetns())("agent: the underlay interface's address changed while it runs", () => {
  const env = agentLab({
    tag: "aua",
    hosts: 2,
    conf: () => ({ Network: NETWORK, Backend: { Type: "vxlan" } }),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
    flags: () => FLAGS,
    // The new address as the secondary DHCP adds before it removes the old, which it then
    // takes the place of (promote_secondaries: the old one's removal keeps it and the /24 route).
    beforeStart: async (lab) => {
      const h1 = lab.hosts[0];
      await h1.ns.exec(["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"]);
      await h1.ns.ip(`addr add ${NEW}/24 dev eth0`);
    },
  });
  /** host1's underlay address at start. */
  const OLD = "198.18.0.11";

  it(
    "removed and given back within the grace, while another address is there: the agent runs on, silent",
    async () => {
      const [a1, a2] = env.all;
      const since = await env.agents.logSize(a1);
      await a1.host.ns.ip(`addr del ${OLD}/24 dev eth0`);
      const removed = performance.now();
      // Several reconciles (1 s apart) see it missing with NEW there.
      await sleep(3000);
      await a1.host.ns.ip(`addr add ${OLD}/24 dev eth0`);
      // Past the grace counted from the removal, and a few reconciles more.
      await sleep(UNDERLAY_ADDRESS_GRACE_MS + 3000 - (performance.now() - removed));
      expect(running(a1.process)).toBe(true);
      expect(await coded(a1.dir, since, "BACKEND_UNDERLAY_ADDRESS")).toEqual([]);
      expect(await env.agents.errorLines(a1, since)).toEqual([]);
      await env.agents.waitReady(a1);
      expect((await ping(a1.host.pods[0], a2.host.pods[0].addr, { count: 2 })).received).toBe(2);
    },
    UNDERLAY_ADDRESS_GRACE_MS + 30_000,
  );

  it(
    "gone: warned of once, the agent waits; another given: it logs BACKEND_UNDERLAY_ADDRESS_CHANGED and exits its own status, its kernel state removed; its restart joins with the new address",
    async () => {
      const [a1, a2] = env.all;
      const h1 = a1.host;
      const since = await env.agents.logSize(a1);
      expect(await overlayDevices(h1)).toEqual(["flannel.1"]);
      expect(await nftTables(h1)).toContain(`ip ${IPMASQ_TABLE}`);
      // No global address left: a restart would find no underlay, so the agent waits, and says so once.
      await h1.ns.ip(`addr del ${OLD}/24 dev eth0`);
      await h1.ns.ip(`addr del ${NEW}/24 dev eth0`);
      const gone = await warnedGone(a1, since, OLD);

      await h1.ns.ip(`addr add ${NEW}/24 dev eth0`);
      // The grace counts from when another address came, not from the loss: at a link's up after a
      // long down, a static address may come back a moment before the one the agent took. Before,
      // the first reconcile with NEW here (1 s) exited.
      await sleep(5000);
      expect(await coded(a1.dir, since, "BACKEND_UNDERLAY_ADDRESS")).toEqual([gone]);
      expect(running(a1.process)).toBe(true);
      expect(await env.agents.exited(a1, UNDERLAY_ADDRESS_GRACE_MS + 30_000)).toBe(EXIT_UNDERLAY_CHANGED);
      expect(await coded(a1.dir, since, "BACKEND_UNDERLAY_ADDRESS")).toEqual([
        gone,
        expect.objectContaining({ level: 50, code: "BACKEND_UNDERLAY_ADDRESS_CHANGED", old: [OLD], now: [NEW] }),
      ]);
      // Stopped as on SIGTERM: nothing of the overlay is left in host1's namespace.
      expect(await overlayDevices(h1)).toEqual([]);
      expect(await podRoutes(h1)).toEqual([]);
      expect(await vxlanEntries(h1)).toEqual({ neighs: [], fdbs: [] });
      expect((await nftTables(h1)).filter((t) => t.endsWith(` ${IPMASQ_TABLE}`))).toEqual([]);
      expect(existsSync(env.agents.subnetFile(a1))).toBe(false);

      // Its supervisor's restart: peers send to the new address.
      env.agents.start(a1, FLAGS);
      await env.agents.waitReady(a1);
      await env.agents.waitFor(a2, "host1's new underlay address", (s) =>
        s.peers.some((p) => p.name === h1.name && p.underlay === NEW),
      );
      await eventually(
        "pod traffic between the hosts",
        async () => (await ping(h1.pods[0], a2.host.pods[0].addr, { count: 2, timeoutS: 1 })).received,
        (n) => n === 2,
        15_000,
      );
    },
    2 * UNDERLAY_ADDRESS_GRACE_MS + 150_000,
  );
});

describe.skipIf(!canUseNetns())(
  "agent: the underlay's address changed, where a restart can or cannot follow it",
  () => {
    const env = agentLab({
      tag: "auaf",
      hosts: 2,
      conf: () => ({ Network: NETWORK, Backend: { Type: "vxlan" } }),
      settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
      flags: () => ["--reconcile-interval", "1"],
      // host1 names its underlay by address, as the DaemonSet's WEFT_IFACE (status.hostIP) does.
      setup: (a) => {
        if (a.host.name === "host1") a.iface = "198.18.0.11";
      },
      // As DHCP would: NEW stays when the old address is removed (see above).
      beforeStart: async (lab) => {
        await lab.hosts[0].ns.exec(["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"]);
        await lab.hosts[0].ns.ip(`addr add ${NEW}/24 dev eth0`);
      },
    });

    it(
      "--iface naming the old address: a restart would not find it, so the agent runs on and says why",
      async () => {
        // Before, another address on the interface was enough: the agent exited 75 and its restart
        // failed (AGENT_UNDERLAY_NOT_FOUND), a restart loop.
        const [a1] = env.all;
        const since = await env.agents.logSize(a1);
        await a1.host.ns.ip("addr del 198.18.0.11/24 dev eth0");
        const gone = await warnedGone(a1, since, "198.18.0.11", "--iface 198.18.0.11");
        expect(await coded(a1.dir, since, "BACKEND_UNDERLAY_ADDRESS")).toEqual([gone]);
      },
      UNDERLAY_ADDRESS_GRACE_MS + 30_000,
    );

    it(
      "the interface made anew under its name with another address (a new index, none of the old addresses): the agent exits for a restart at it",
      async () => {
        // Before, only the addresses of the device the agent followed counted, and it follows none
        // that holds none of the underlay's: warned of as gone, for ever.
        const [, a2] = env.all;
        const h2 = a2.host;
        const since = await env.agents.logSize(a2);
        await h2.ns.ip("link del eth0");
        await env.lab.switchNs.ip(`link add h2 type veth peer name eth0 netns ${h2.ns.name}`);
        await env.lab.switchNs.ip("link set h2 master br0 up");
        await h2.ns.ip("addr add 198.18.0.112/24 dev eth0");
        await h2.ns.ip("link set dev eth0 up");
        expect(await env.agents.exited(a2, UNDERLAY_ADDRESS_GRACE_MS + 30_000)).toBe(EXIT_UNDERLAY_CHANGED);
        expect(await coded(a2.dir, since, "BACKEND_UNDERLAY_ADDRESS")).toEqual([
          expect.objectContaining({
            code: "BACKEND_UNDERLAY_ADDRESS_CHANGED",
            old: ["198.18.0.12"],
            now: ["198.18.0.112"],
          }),
        ]);
      },
      UNDERLAY_ADDRESS_GRACE_MS + 60_000,
    );
  },
);
