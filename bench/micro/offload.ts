// Offload hot-path microbenchmarks, in payload bytes per second of one core: the send path cutting
// a 60 KiB TCP super-packet (a TSO read from the TUN device: 44 segments of 1398 bytes) into VXLAN
// segments in UDP GSO trains, and the receive path decapsulating a UDP GRO batch of those segments
// and coalescing them back into one super-packet (trusted: no checksum pass), or single datagrams
// (checked, then coalesced). The send side is the one Wasm pass over every byte with offloads on.
// Each call first restores the descriptors and, on the send side, the slots' headroom, where the
// vnet header is parked and the encapsulation written; the packets' bytes stay as loaded.
import { buildTcp4 } from "../../test/reference/tcp-offload.js";
import {
  datagrams,
  leavePartial,
  loadReceive,
  loadSend,
  payloadOf,
  runReceive,
  runSend,
  RX,
  send,
  TX,
} from "../../test/support/offload.js";
import { runMicroSuite, type MicroCase, type MicroResult } from "./suite.js";

/** The MSS of a 1450-byte pod MTU (flannel's VXLAN MTU on a 1500-byte underlay) with timestamps. */
const GSO_SIZE = 1398;
const SEGMENTS = 44;
/** Single-datagram receives after the GRO receive in the receiver's batch (16 slots). */
const SINGLES = 15;
/** Super-packets per send call, as a TUN read batch brings them. */
const SEND_BATCH = 4;
const HEADROOM = 64;

/** A TSO super-packet as the kernel leaves it: its checksum partial (NEEDS_CSUM). */
function superPacket(seq: number): Uint8Array {
  return leavePartial(
    buildTcp4({
      src: 0xc6130105,
      dst: 0xc6130207,
      srcPort: 40000,
      dstPort: 5201,
      seq,
      ack: 1,
      flags: 0x10,
      window: 512,
      options: Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
      payload: payloadOf(seq, SEGMENTS * GSO_SIZE),
    }),
  );
}

/** Saves `regions` ([offset, length] in memory) and returns a function that puts them back. */
function restorer(memory: WebAssembly.Memory, regions: Array<[number, number]>): () => void {
  const saved = regions.map(([at, n]) => new Uint8Array(memory.buffer, at, n).slice());
  const views = regions.map(([at, n]) => new Uint8Array(memory.buffer, at, n));
  return () => saved.forEach((s, i) => views[i].set(s));
}

export function offloadBenchmarks(maxTime?: number): MicroResult[] {
  const packets = Array.from({ length: SEND_BATCH }, (_, i) => ({
    bytes: superPacket(i * 100_000),
    gsoSize: GSO_SIZE,
  }));
  const payloadBytes = SEGMENTS * GSO_SIZE;

  // The receive side gets one super-packet's datagrams as one GRO receive (44 fit in 64 KiB), whose
  // outer checksum the kernel verified, so they are merged without a pass over them; and the first
  // SINGLES datagrams of another as receives of one datagram each (as from a kernel vxlan peer,
  // zero checksums), which keep the full check before they are merged.
  const { trains, mem } = send([packets[0]], "vxlan");
  const run = datagrams(trains, mem);
  if (run.length !== SEGMENTS) throw new Error(`benchmark super-packet gave ${run.length} datagrams, not ${SEGMENTS}`);
  const other = send([packets[1]], "vxlan");
  const singles = datagrams(other.trains, other.mem).slice(0, SINGLES);
  loadReceive([run, ...singles.map((d) => [d])]);
  const rxDescs = RX.rig.batch.descView();
  const restoreRx = restorer(RX.rig.hp.memory, [[RX.rig.batch.descs, rxDescs.byteLength]]);
  if (runReceive(1, "vxlan") !== 1) throw new Error("benchmark GRO batch was not coalesced into one super-packet");
  const { hp } = RX.rig;
  // Receives 1.. of the batch: their descriptors follow the GRO receive's.
  const runSingles = () =>
    hp.fn.decapBatch(
      RX.rig.ctx.ptr,
      RX.rig.batch.descs + hp.constant("DESC_BYTES"),
      SINGLES,
      hp.wireFormat("vxlan"),
      1,
      RX.scratch,
      RX.outDescs,
      RX.outMax,
      RX.out,
      RX.cap,
    );
  if (runSingles() !== 1) throw new Error("benchmark single datagrams were not coalesced into one super-packet");

  loadSend(packets);
  const txDescs = TX.rig.batch.descView();
  const slots = Array.from({ length: SEND_BATCH }, (_, i) => [txDescs[i * 8] - HEADROOM, HEADROOM] as [number, number]);
  const restoreTx = restorer(TX.rig.hp.memory, [[TX.rig.batch.descs, txDescs.byteLength], ...slots]);
  const sends = runSend(SEND_BATCH, "vxlan") & 0xffff;
  if (sends !== SEND_BATCH) throw new Error(`benchmark super-packets gave ${sends} GSO sends, not ${SEND_BATCH}`);

  const cases: MicroCase[] = [
    {
      name: `wasm segment ${SEND_BATCH} × 60 KiB TSO reads into VXLAN GSO sends`,
      perCall: SEND_BATCH * payloadBytes,
      unit: "bytes",
      fn: () => {
        restoreTx();
        runSend(SEND_BATCH, "vxlan");
      },
    },
    {
      name: `wasm decap + coalesce a ${SEGMENTS}-datagram GRO receive`,
      perCall: payloadBytes,
      unit: "bytes",
      fn: () => {
        restoreRx();
        runReceive(1, "vxlan");
      },
    },
    {
      name: `wasm decap + check + coalesce ${SINGLES} single-datagram receives`,
      perCall: SINGLES * GSO_SIZE,
      unit: "bytes",
      fn: () => {
        restoreRx();
        runSingles();
      },
    },
  ];
  return runMicroSuite(`Offloads, ${GSO_SIZE}-byte segments, payload bytes`, cases, { maxTime });
}
