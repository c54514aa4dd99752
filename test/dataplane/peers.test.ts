// The dataplane's peer table over a real Wasm route table: a set() that the route table refuses
// (full) leaves the table as it was; the table the dataplane sizes holds a peer per /24; overlaps
// are refused as a check of every pair would. The per-peer sums /status shows are, on generated
// counters, each peer's counters summed over every pair. And on a real dataplane: a peer given a
// freed next hop starts with counters at 0.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { DataplaneContext } from "../../src/hotpath/context.js";
import { PeerTable, peerRouteTableSize, type DataplanePeer } from "../../src/dataplane/peers.js";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable } from "../../src/hotpath/route-table.js";
import { RouteTable6 } from "../../src/hotpath/route-table6.js";
import { formatAnyPrefix, overlaps, type IpPrefix } from "../../src/net/ip.js";
import type { LabCluster } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { parseIpv4, parsePrefix } from "../../src/net/ipv4.js";
import { parseIpv6, parsePrefix6 } from "../../src/net/ipv6.js";
import { dataplanePair, peerOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

const hp = new HotPath(createHotPathMemory());
const arena = new Arena(hp);

/** A peer table of `slots` next hops over a route table with one tbl8 group: one prefix longer than /24 fills it. */
function table(slots: number) {
  const routes = new RouteTable(hp, arena, { tbl8Groups: 1, maxRules: 16, maxNextHops: slots });
  const peers = new PeerTable(routes, slots, () => {});
  const record = (i: number) => {
    const at = hp.fn.nextHopPtr(routes.base, i);
    return new Uint8Array(hp.memory.buffer.slice(at, at + 16));
  };
  return { routes, peers, record };
}

const peer = (name: string, subnet: string, underlay = "198.18.0.2"): DataplanePeer => ({
  name,
  subnet: parsePrefix(subnet),
  underlay: parseIpv4(underlay),
  port: 8472,
});

// Another run of a peer (the node restarted, ControlPlane's run) is a new peer of the same name: a
// fresh slot, zeroed, its route moved there in one replace, the old slot freed last, its record
// left whole until the slot is given again; with no slot free, its own slot zeroed. Before, it kept its slot and the old run's counts.
describe("PeerTable.set of another run of a peer", () => {
  /** A table of `slots` whose zeroed slots are listed in `zeroed`. */
  const tracked = (slots: number) => {
    const routes = new RouteTable(hp, arena, { tbl8Groups: 1, maxRules: 16, maxNextHops: slots });
    const zeroed: number[] = [];
    const peers = new PeerTable(routes, slots, (i) => zeroed.push(i));
    const record = (i: number) => {
      const at = hp.fn.nextHopPtr(routes.base, i);
      return new Uint8Array(hp.memory.buffer.slice(at, at + 16));
    };
    return { routes, peers, zeroed, record };
  };

  it("moves it to a fresh zeroed slot and frees the old one last", () => {
    const { routes, peers, zeroed, record } = tracked(3);
    peers.set({ ...peer("a", "198.19.1.0/24"), run: 1 });
    peers.set({ ...peer("a", "198.19.1.0/24"), run: 1 });
    const oldRun = record(0);
    peers.set({ ...peer("a", "198.19.1.0/24", "198.18.0.3"), run: 2 });
    expect(zeroed).toEqual([0, 1]);
    expect(routes.lookup(parseIpv4("198.19.1.5"))).toBe(1);
    // A worker that looked up the old slot before the route moved still finds its record whole.
    expect(oldRun.some((byte) => byte !== 0)).toBe(true);
    expect(record(0)).toEqual(oldRun);
    expect(peers.list().map((p) => [p.name, p.nextHop])).toEqual([["a", 1]]);
    peers.set(peer("b", "198.19.2.0/24"));
    peers.set(peer("c", "198.19.3.0/24", "198.18.0.4"));
    expect(peers.list().map((p) => [p.name, p.nextHop])).toEqual([
      ["a", 1],
      ["b", 2],
      ["c", 0],
    ]);
    expect(record(0)).not.toEqual(oldRun);
  });

  it("zeroes its own slot when none is free", () => {
    const { routes, peers, zeroed } = tracked(2);
    peers.set({ ...peer("a", "198.19.1.0/24"), run: 1 });
    peers.set({ ...peer("x", "198.19.2.0/24"), run: 1 });
    peers.set({ ...peer("a", "198.19.1.0/24"), run: 2 });
    expect(zeroed).toEqual([0, 1, 0]);
    expect(routes.lookup(parseIpv4("198.19.1.5"))).toBe(0);
  });

  it("keeps the old run on its route and record where the route table refuses the new one, the fresh slot freed", () => {
    const { routes, peers, record } = tracked(3);
    peers.set({ ...peer("a", "198.19.1.0/24"), run: 1 });
    peers.set(peer("x", "198.19.9.0/25"));
    const before = record(0);
    expect(() => peers.set({ ...peer("a", "198.19.3.0/25", "198.18.0.3"), run: 2 })).toThrow(
      expect.objectContaining({ code: "HOTPATH_ROUTE_ERR_FULL_TBL8" }),
    );
    expect(routes.lookup(parseIpv4("198.19.1.5"))).toBe(0);
    expect(routes.lookup(parseIpv4("198.19.3.5"))).toBeUndefined();
    expect(record(0)).toEqual(before);
    expect(record(2).every((byte) => byte === 0)).toBe(true);
    expect(peers.list().map((p) => [p.name, p.nextHop, p.run])).toEqual([
      ["a", 0, 1],
      ["x", 1, undefined],
    ]);
    // The fresh slot went back first in line: the next new peer takes it.
    peers.set(peer("b", "198.19.4.0/24"));
    expect(peers.list().find((p) => p.name === "b")?.nextHop).toBe(2);
  });
});

describe("PeerTable.set when the route table is full", () => {
  it("gives a new peer's next-hop slot back and leaves its record empty", () => {
    const { routes, peers, record } = table(3);
    peers.set(peer("a", "198.19.1.0/25"));
    expect(() => peers.set(peer("b", "198.19.2.0/25"))).toThrow(
      expect.objectContaining({ code: "HOTPATH_ROUTE_ERR_FULL_TBL8" }),
    );
    expect(peers.list().map((p) => p.name)).toEqual(["a"]);
    expect(record(1).every((byte) => byte === 0)).toBe(true);
    expect(routes.lookup(parseIpv4("198.19.2.1"))).toBeUndefined();
    // Both remaining slots are still free.
    peers.set(peer("c", "198.19.3.0/24"));
    peers.set(peer("d", "198.19.4.0/24"));
    expect(peers.list().map((p) => p.nextHop)).toEqual([0, 1, 2]);
  });

  it("keeps a peer that moves subnet on its old route and record, so that it can be updated and removed", () => {
    const { routes, peers, record } = table(2);
    peers.set(peer("a", "198.19.1.0/24", "198.18.0.2"));
    peers.set(peer("x", "198.19.9.0/25"));
    const before = record(0);
    expect(() => peers.set(peer("a", "198.19.3.0/25", "198.18.0.3"))).toThrow(
      expect.objectContaining({ code: "HOTPATH_ROUTE_ERR_FULL_TBL8" }),
    );
    expect(routes.lookup(parseIpv4("198.19.1.5"))).toBe(0);
    expect(routes.lookup(parseIpv4("198.19.3.5"))).toBeUndefined();
    expect(record(0)).toEqual(before);
    expect(peers.list().find((p) => p.name === "a")?.subnet).toEqual(parsePrefix("198.19.1.0/24"));
    // The entry still matches the table: a later move that fits, then a remove, succeed.
    peers.set(peer("a", "198.19.4.0/24", "198.18.0.3"));
    expect(routes.lookup(parseIpv4("198.19.1.5"))).toBeUndefined();
    expect(routes.lookup(parseIpv4("198.19.4.5"))).toBe(0);
    expect(peers.remove("a")).toBe(true);
    expect(routes.lookup(parseIpv4("198.19.4.5"))).toBeUndefined();
  });
});

describe("the dataplane's peer tables (peerRouteTableSize)", () => {
  const MAX_PEERS = 4096;

  it("hold 400 peers of /26 in distinct /24s: each takes a tbl8 group of its own", () => {
    // A wide network with small subnets, as the lease ring spreads them (198.18.0.0/15: 512 /24s).
    const routes = new RouteTable(hp, arena, peerRouteTableSize(MAX_PEERS));
    const peers = new PeerTable(routes, MAX_PEERS, () => {});
    const at = (i: number) => parseIpv4("198.18.0.0") + i * 256;
    for (let i = 0; i < 400; i++) peers.set({ ...peer(`n${i}`, "198.18.0.0/26"), subnet: { addr: at(i), len: 26 } });
    const next = new Map(peers.list().map((p) => [p.name, p.nextHop]));
    for (let i = 0; i < 400; i++) {
      expect(routes.lookup(at(i) + 5)).toBe(next.get(`n${i}`));
      expect(routes.lookup(at(i) + 64)).toBeUndefined();
    }
  });

  it("hold as many IPv6 peers, scattered over the pod network", () => {
    const routes = new RouteTable6(hp, arena, peerRouteTableSize(MAX_PEERS));
    const peers = new PeerTable(routes, MAX_PEERS, () => {});
    const network = parsePrefix6("2001:2:0:8000::/49");
    // /120s at scattered places of the /49 (a multiplicative hash of i): long, sparse trie paths.
    const at = (i: number) => network.addr | (((BigInt(i) * 0x9e3779b1n) & ((1n << 71n) - 1n)) << 8n);
    const underlay = parseIpv6("2001:2::2");
    for (let i = 0; i < MAX_PEERS; i++)
      peers.set({ name: `n${i}`, subnet: { addr: at(i), len: 120 }, underlay, port: 8472 });
    const next = new Map(peers.list().map((p) => [p.name, p.nextHop]));
    for (let i = 0; i < MAX_PEERS; i += 97) expect(routes.lookup(at(i) | 7n)).toBe(next.get(`n${i}`));
    expect(() =>
      peers.set({ name: "one-more", subnet: { addr: at(MAX_PEERS), len: 120 }, underlay, port: 8472 }),
    ).toThrow(expect.objectContaining({ code: "DATAPLANE_PEERS_FULL" }));
  });

  it("refuse a subnet that overlaps another peer's, as a check of every pair would, through sets, moves and removes", () => {
    const routes = new RouteTable(hp, arena, peerRouteTableSize(64));
    const peers = new PeerTable(routes, 64, () => {});
    // Random prefixes /22../28 in 198.19.0.0/20, names from a small set so that sets move peers.
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const held = new Map<string, IpPrefix>();
    let refused = 0;
    for (let step = 0; step < 3000; step++) {
      const name = `n${random(40)}`;
      if (random(5) === 0) {
        expect(peers.remove(name)).toBe(held.delete(name));
        continue;
      }
      const len = 22 + random(7);
      const addr = parseIpv4(`198.19.${random(16)}.${random(256)}`);
      const subnet = { addr: (addr & ~(2 ** (32 - len) - 1)) >>> 0, len };
      const clash = [...held].find(([n, p]) => n !== name && overlaps(p, subnet));
      const set = () => peers.set({ ...peer(name, "198.19.0.0/24"), subnet });
      if (clash) {
        refused++;
        expect(set, `${name} ${formatAnyPrefix(subnet)}`).toThrow(
          expect.objectContaining({ code: "DATAPLANE_SUBNET_OVERLAP" }),
        );
      } else {
        set();
        held.set(name, subnet);
      }
      expect(new Map(peers.list().map((p) => [p.name, p.subnet]))).toEqual(held);
    }
    expect(refused).toBeGreaterThan(100);
  });
});

describe("per-peer sums (counters({ peers: true }), for /status)", () => {
  it("are each peer's counters, read slot by slot (DataplaneContext.peer), summed over every pair", () => {
    const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 40 }),
        fc.nat(),
        (pairCount, slots, seed) => {
          const pairs = Array.from({ length: pairCount }, () => ({
            ctx: new DataplaneContext(hp, arena, {
              routes: 0,
              vni: 1,
              mac: new Uint8Array(6),
              antiSpoof: false,
              peerSlots: slots,
            }),
          }));
          // Counters anywhere in the u64 range, so that sums pass 2^53 and 2^64.
          const values = fc.sample(u64, { seed, numRuns: pairCount * slots * 4 });
          for (const [k, { ctx }] of pairs.entries())
            for (const [d, base] of [ctx.peerTx, ctx.peerRx].entries())
              new BigUint64Array(hp.memory.buffer, base, slots * 2).set(
                values.slice((k * 2 + d) * slots * 2, (k * 2 + d + 1) * slots * 2),
              );
          // Peers on some of the slots, not in slot order; the others stay unused.
          const peers = fc
            .sample(fc.shuffledSubarray([...Array(slots).keys()]), { seed, numRuns: 1 })[0]
            .map((nextHop) => ({ name: `n${nextHop}`, nextHop }));
          const stand = { pairs, hp, peers: { list: () => peers } };
          const got: object = Reflect.apply(Reflect.get(UserspaceDataplane.prototype, "peerCounters"), stand, []);
          const want: Record<string, Record<string, bigint>> = {};
          for (const p of peers) {
            const per = pairs.map((q) => q.ctx.peer(p.nextHop));
            const sum = (f: (c: (typeof per)[number]) => bigint) => per.reduce((n, c) => n + f(c), 0n);
            want[p.name] = {
              txPackets: sum((c) => c.tx.packets),
              txBytes: sum((c) => c.tx.bytes),
              rxPackets: sum((c) => c.rx.packets),
              rxBytes: sum((c) => c.rx.bytes),
            };
          }
          expect(got).toStrictEqual(want);
          expect(Object.keys(got)).toEqual(peers.map((p) => p.name));
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe.skipIf(!canUseNetns())("per-peer counters on a real dataplane", () => {
  let lab: LabCluster;
  let dps: UserspaceDataplane[] = [];

  beforeAll(async () => {
    // Two next hops: a removed peer's slot is given again only once the other one is taken.
    ({ lab, dps } = await dataplanePair("dppeers", { extra: { maxPeers: 2 } }));
  });
  afterAll(async () => {
    await Promise.allSettled(dps.map((dp) => dp.stop()));
    await lab?.destroy();
  });

  it("start at 0 for a new peer that gets a removed peer's next hop", async () => {
    const [h1, h2] = lab.hosts;
    const [dp] = dps;
    expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 3 })).received).toBe(3);
    const old = dp.counters({ peers: true }).peers![h2.name];
    expect(old.txPackets).toBeGreaterThanOrEqual(3n);
    expect(old.rxPackets).toBeGreaterThanOrEqual(3n);
    const slot = dp.listPeers().find((p) => p.name === h2.name)?.nextHop;
    expect(dp.removePeer(h2.name)).toBe(true);
    // A freed slot rests at the back of the queue (a worker may still count a batch resolved to
    // the removed peer): the next new peer gets the other one.
    const filler = { ...peerOf(h2, 2), name: "filler", subnet: parsePrefix("198.19.200.0/24") };
    dp.setPeer(filler);
    expect(dp.listPeers().find((p) => p.name === "filler")?.nextHop).not.toBe(slot);
    dp.setPeer({ ...peerOf(h2, 2), name: "host2-again" });
    expect(dp.listPeers().find((p) => p.name === "host2-again")?.nextHop).toBe(slot);
    expect(dp.counters({ peers: true }).peers!["host2-again"]).toEqual({
      txPackets: 0n,
      txBytes: 0n,
      rxPackets: 0n,
      rxBytes: 0n,
    });
    // And it counts its own traffic from there.
    expect((await ping(h1.pods[0], h2.pods[0].addr, { count: 3 })).received).toBe(3);
    expect(dp.counters({ peers: true }).peers!["host2-again"].txPackets).toBeGreaterThanOrEqual(3n);
  });
});
