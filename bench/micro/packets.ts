// Packet hot-path microbenchmarks: VXLAN encapsulation with route lookup, and decapsulation, for
// batches of 64 packets of 64 and 1400 bytes, Wasm against the TypeScript reference.
// Each Wasm call is preceded by restoring the batch's descriptors (2 KiB copy), which stands in
// for the descriptor fill a TUN or socket read does; packet bytes stay in place as in production.
import { Arena } from "../../src/hotpath/arena.js";
import { PacketBatch } from "../../src/hotpath/batch.js";
import { DataplaneContext } from "../../src/hotpath/context.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable } from "../../src/hotpath/route-table.js";
import { buildIpv4 } from "../../test/reference/build.js";
import { ReferenceRouteTable } from "../../test/reference/lpm.js";
import { refSend, refVxlanReceive, type NextHop } from "../../test/reference/packets.js";
import { runMicroSuite, type MicroCase, type MicroResult } from "./suite.js";

const BATCH = 64;
const PEERS = 1000; // one /24 per peer inside 198.19.0.0/16 and beyond: a large cluster's table
const OUR_MAC = Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, 0x00, 0x01]);

function peerMac(i: number): Uint8Array {
  return Uint8Array.from([0x0a, 0x58, 0, 0, i >> 8, i & 255]);
}

/** Peer i owns 198.19.0.0/16 + i*256 (wrapping into 198.20/198.21 numerically: test data only, never sent). */
const peerSubnet = (i: number) => (0xc6130000 + i * 256) >>> 0;

function caseSet(size: number): { cases: MicroCase[] } {
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  const routes = new RouteTable(hp, arena, { tbl8Groups: 16, maxRules: 4096, maxNextHops: 4096 });
  const reference = new ReferenceRouteTable({ tbl8Groups: 16, maxRules: 4096, maxNextHops: 4096 });
  const hops = new Map<number, NextHop>();
  for (let i = 0; i < PEERS; i++) {
    const nh = { ip: 0xc6120000 + 2 + (i % 250), port: 8472, mac: peerMac(i), valid: true };
    hops.set(i, nh);
    routes.setNextHop(i, nh);
    routes.insert({ addr: peerSubnet(i), len: 24 }, i);
    reference.insert(peerSubnet(i), 24, i);
  }
  const ctx = new DataplaneContext(hp, arena, {
    routes: routes.base,
    vni: 1,
    mac: OUR_MAC,
    antiSpoof: false,
    peerSlots: PEERS,
  });
  const payloadLen = size - 28;
  const packets = Array.from({ length: BATCH }, (_, i) =>
    buildIpv4({
      src: 0xc6130002,
      dst: peerSubnet((i * 7919) % PEERS) + 5,
      protocol: 17,
      ttl: 63,
      payload: new Uint8Array(payloadLen).fill(i),
    }),
  );

  const tx = new PacketBatch(hp, arena, BATCH, 2048);
  const rx = new PacketBatch(hp, arena, BATCH, 2048);
  const pristine = (b: PacketBatch, contents: Uint8Array[]) => {
    b.load(contents);
    return b.descView().slice();
  };
  const txDescs = pristine(tx, packets);
  // The receive side gets what the send side produced, addressed to "us".
  const frames = packets.map((p) => {
    const r = refSend(
      p,
      {
        vni: 1,
        mac: peerMac(3),
        lookup: (a) => reference.lookup(a),
        nextHop: (i) => ({ ...hops.get(i)!, mac: OUR_MAC }),
      },
      "vxlan",
    );
    return r.out!;
  });
  const rxDescs = pristine(rx, frames);
  const txView = tx.descView();
  const rxView = rx.descView();
  const sendCtx = {
    vni: 1,
    mac: OUR_MAC,
    lookup: (a: number) => reference.lookup(a),
    nextHop: (i: number) => hops.get(i),
  };

  const vxlan = hp.wireFormat("vxlan");
  // Sanity: every packet of the batch is forwarded, else the figures would measure drops.
  txView.set(txDescs);
  const sent = hp.fn.encapBatch(ctx.ptr, tx.descs, BATCH, vxlan, 0, tx.descs, 0, 0);
  rxView.set(rxDescs);
  const got = hp.fn.decapBatch(ctx.ptr, rx.descs, BATCH, vxlan, 0, 0, rx.descs, BATCH, 0, 0);
  if (sent !== BATCH || got !== BATCH)
    throw new Error(`benchmark batch not fully forwarded: encap ${sent}, decap ${got}`);

  return {
    cases: [
      {
        name: `wasm encap+lookup ${size} B, batch ${BATCH}`,
        perCall: BATCH,
        unit: "packets",
        fn: () => {
          txView.set(txDescs);
          hp.fn.encapBatch(ctx.ptr, tx.descs, BATCH, vxlan, 0, tx.descs, 0, 0);
        },
      },
      {
        name: `wasm decap ${size} B, batch ${BATCH}`,
        perCall: BATCH,
        unit: "packets",
        fn: () => {
          rxView.set(rxDescs);
          hp.fn.decapBatch(ctx.ptr, rx.descs, BATCH, vxlan, 0, 0, rx.descs, BATCH, 0, 0);
        },
      },
      {
        name: `reference encap+lookup ${size} B (linear-scan LPM)`,
        perCall: BATCH,
        unit: "packets",
        fn: () => {
          for (const p of packets) refSend(p, sendCtx, "vxlan");
        },
      },
      {
        name: `reference decap ${size} B`,
        perCall: BATCH,
        unit: "packets",
        fn: () => {
          for (const f of frames) refVxlanReceive(f, 1, OUR_MAC);
        },
      },
    ],
  };
}

export function packetBenchmarks(maxTime?: number): MicroResult[] {
  return [64, 1400].flatMap((size) =>
    runMicroSuite(`VXLAN hot path, ${PEERS} peer routes, ${size} B packets`, caseSet(size).cases, { maxTime }),
  );
}
