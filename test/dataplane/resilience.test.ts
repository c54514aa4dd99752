// The userspace dataplane under change and abuse: route updates while traffic flows, peer removal,
// a worker thread killed mid-transfer, and malformed traffic sprayed at a worker's port.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { buildIpv4, buildVxlan } from "../reference/build.js";
import { refVxlanReceive } from "../reference/packets.js";
import { dataplanePair, macOf, peerOf, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { tcpTransfer } from "../support/tcp-transfer.js";
import { udpPeer } from "../support/udp-peer.js";

const MB = 1_000_000;

describe.skipIf(!canUseNetns())("userspace dataplane under change and abuse", () => {
  let lab: LabCluster;
  let dp1: UserspaceDataplane;
  let dp2: UserspaceDataplane;

  beforeAll(async () => {
    // Every sprayed datagram must reach validation to be counted by its reason, so no sojourn
    // limit here: a transfer running beside the spray can make the queue stand (queue-delay.test.ts).
    ({
      lab,
      dps: [dp1, dp2],
    } = await dataplanePair("resil", { extra: { queueDelayUs: 0 } }));
  });

  afterAll(async () => {
    await dp1?.stop();
    await dp2?.stop();
    await lab?.destroy();
  });

  it("keeps a transfer exact while the route table changes under it", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    let churn = 0;
    let running = true;
    // Peers come and go (other subnets) while the transfer runs; every change is a table write.
    const churner = (async () => {
      while (running && churn < 20_000) {
        for (let i = 0; i < 50; i++)
          dp1.setPeer({
            name: `ghost${i}`,
            subnet: subnetOf(100 + i),
            underlay: 0xc6120080 + i,
            port: 8472,
            vtepMac: macOf(100 + i),
          });
        for (let i = 0; i < 50; i++) dp1.removePeer(`ghost${i}`);
        dp1.setPeer(peerOf(lab.hosts[1], 2)); // the real peer, rewritten in place
        churn += 101;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const t = await tcpTransfer(p1, p2, 100 * MB);
    running = false;
    await churner;
    expect(t.received).toEqual(t.sent);
    expect(churn).toBeGreaterThan(100);
  });

  it("stops traffic to a removed peer at once and resumes when it is back", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const before = dp1.counters().tx.packets.REPLY;
    dp1.removePeer(lab.hosts[1].name);
    const cut = await ping(p1, p2.addr, { count: 2, timeoutS: 1 });
    expect(cut.received).toBe(0);
    // No route: the sender got ICMP net unreachable from the dataplane, one per ping.
    expect(dp1.counters().tx.packets.REPLY - before).toBe(2n);
    expect(cut.unreachable).toBe(2);
    dp1.setPeer(peerOf(lab.hosts[1], 2));
    expect((await ping(p1, p2.addr, { count: 1, timeoutS: 1 })).received).toBe(1);
  });

  it("replaces a worker killed mid-transfer; the transfer completes", async () => {
    const [p1] = lab.hosts[0].pods;
    const [p2] = lab.hosts[1].pods;
    const transfer = tcpTransfer(p1, p2, 150 * MB);
    await new Promise((r) => setTimeout(r, 400));
    expect(await dp1.killWorkers()).toBe(2);
    const t = await transfer;
    expect(t.received).toEqual(t.sent);
    expect(dp1.counters().workerRestarts).toBeGreaterThanOrEqual(2);
    expect((await ping(p1, p2.addr, { count: 2 })).received).toBe(2);
  });

  it("drops sprayed garbage with the right reasons while a transfer runs", async () => {
    const [h1, h2] = lab.hosts;
    const [p1] = h1.pods;
    const [p2] = h2.pods;
    // Malformed datagrams from host1's underlay address (a known peer): random bytes, truncated
    // frames, wrong VNI, wrong MAC, broadcast ARP, inner sources outside host1's subnet.
    const good = buildVxlan(
      1,
      macOf(2),
      macOf(1),
      0x0800,
      buildIpv4({ src: subnetOf(1).addr + 2, dst: subnetOf(2).addr + 2, payload: new Uint8Array(64) }),
    );
    const spray: Uint8Array[] = [];
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) & 255;
    for (let i = 0; i < 400; i++) {
      const kind = i % 8;
      if (kind === 0) spray.push(Uint8Array.from({ length: 1 + (rnd() % 200) }, rnd));
      else if (kind === 1) spray.push(good.slice(0, rnd() % 40));
      else if (kind === 2) spray.push(buildVxlan(7, macOf(2), macOf(1), 0x0800, good.subarray(22)));
      else if (kind === 3) spray.push(buildVxlan(1, macOf(9), macOf(1), 0x0800, good.subarray(22)));
      else if (kind === 4) spray.push(buildVxlan(1, new Uint8Array(6).fill(255), macOf(1), 0x0806, new Uint8Array(28)));
      else if (kind === 5)
        spray.push(
          buildVxlan(1, macOf(2), macOf(1), 0x0800, buildIpv4({ src: 0xc6133301, dst: subnetOf(2).addr + 2 })),
        );
      else if (kind === 6)
        spray.push(
          buildVxlan(
            1,
            macOf(2),
            macOf(1),
            0x0800,
            buildIpv4({ src: subnetOf(2).addr + 9, dst: subnetOf(2).addr + 2 }),
          ),
        );
      else spray.push(buildVxlan(0, macOf(2), macOf(1), 0x0800, good.subarray(22), 0));
    }
    const expected: Record<string, bigint> = {};
    const peers = new Map([[subnetOf(1).addr >>> 8, h1.underlayAddr]]);
    for (const f of spray) {
      const r = refVxlanReceive(f, 1, macOf(2), {
        from: h1.underlayAddr,
        lookup: (a) => (peers.has(a >>> 8) ? 0 : -1),
        nextHop: () => ({ ip: h1.underlayAddr, port: 8472, mac: macOf(1), valid: true }),
      });
      expect(r.verdict).not.toBe("FORWARD");
      expected[r.verdict] = (expected[r.verdict] ?? 0n) + 1n;
    }
    const before = dp2.counters().rx.packets;
    const transfer = tcpTransfer(p1, p2, 60 * MB);
    const sprayer = udpPeer(h1.ns, {
      bind: `${formatIpv4(h1.underlayAddr)}:9999`,
      sendTo: `${formatIpv4(h2.underlayAddr)}:8472`,
      send: spray,
      expect: 0,
    });
    await sprayer.done;
    const t = await transfer;
    expect(t.received).toEqual(t.sent);
    const after = dp2.counters().rx.packets;
    for (const [reason, n] of Object.entries(expected)) {
      expect({ reason, n: after[reason] - before[reason] }).toEqual({ reason, n });
    }
    expect(Object.keys(expected).length).toBeGreaterThanOrEqual(6);
  });
});
