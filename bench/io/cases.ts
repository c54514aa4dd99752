// The measured loops, run by run.ts inside a namespace it prepared (`ip netns exec`), so that
// every socket and device here, Node's dgram sockets included, lives in that namespace.
// Prints one JSON line per case.
import dgram from "node:dgram";
import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { median } from "../../src/bench/stats.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { TunQueue } from "../../src/io/tun.js";
import { UdpSocket } from "../../src/io/udp.js";
import { buildEcho, ICMP_ECHO_REQUEST } from "../../test/io/icmp.js";
import { Slots } from "../../test/io/slots.js";
import {
  BATCH_SIZES,
  MAX_PACKETS,
  PAYLOAD_BYTES,
  REPEATS,
  SETUP,
  SLICE_MS,
  type CaseResult,
  type Mode,
} from "./setup.js";

/** A round that has not completed in this time counts its missing packets as lost. */
const ROUND_TIMEOUT_MS = 200;

/** Moves `n` packets with `move(first, count)`, in calls of `per` packets; returns how many moved. */
function drive(move: (first: number, count: number) => number, n: number, per: number, deadline: number): number {
  let done = 0;
  for (let spins = 0; done < n; spins++) {
    done += move(done, Math.min(per, n - done));
    if ((spins & 1023) === 1023 && performance.now() > deadline) break;
  }
  return done;
}

type Round = () => number | Promise<number>;
type BatchCall = (buf: Uint8Array, descs: Int32Array, first: number, count: number) => number;

/** A round: `batch` packets from tx with `send`, then as many into rx with `receive`, `per` per call. */
function transferRound(send: BatchCall, receive: BatchCall, tx: Slots, rx: Slots, batch: number, per: number): Round {
  return () => {
    const deadline = performance.now() + ROUND_TIMEOUT_MS;
    const sent = drive((f, c) => send(tx.buf, tx.descs, f, c), batch, per, deadline);
    return drive((f, c) => receive(rx.buf, rx.descs, f, c), sent, per, deadline);
  };
}

/** Runs rounds (each returning the packets it delivered) for SLICE_MS or up to MAX_PACKETS. */
async function slice(
  batch: number,
  round: Round,
): Promise<{ packets: number; lost: number; pps: number; cpuNsPerPacket: number }> {
  let packets = 0;
  let lost = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  while (performance.now() - start < SLICE_MS && packets < MAX_PACKETS) {
    const got = await round();
    packets += got;
    lost += batch - got;
  }
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    packets,
    lost,
    pps: packets / seconds,
    cpuNsPerPacket: ((used.user + used.system) * 1000) / Math.max(packets, 1),
  };
}

/**
 * Measures the modes of one case in turns (REPEATS slices each, interleaved, so that load from
 * other processes on the machine hits all modes alike) and reports the median slice of each.
 */
async function compare(name: string, batch: number, rounds: Partial<Record<Mode, Round>>): Promise<CaseResult[]> {
  const slices = new Map<Mode, Awaited<ReturnType<typeof slice>>[]>();
  for (let r = 0; r < REPEATS; r++) {
    for (const [mode, round] of Object.entries(rounds) as [Mode, Round][]) {
      slices.set(mode, [...(slices.get(mode) ?? []), await slice(batch, round)]);
    }
  }
  return [...slices].map(([mode, s]) => ({
    name,
    mode,
    batch,
    packets: s.reduce((sum, x) => sum + x.packets, 0),
    lost: s.reduce((sum, x) => sum + x.lost, 0),
    pps: Math.round(median(s.map((x) => x.pps))),
    cpuNsPerPacket: Math.round(median(s.map((x) => x.cpuNsPerPacket))),
  }));
}

/** Echo requests into the TUN device, which the kernel answers back out of it: write + read. */
async function tunCases(): Promise<CaseResult[]> {
  const tun = TunQueue.open(SETUP.tun);
  const tx = new Slots();
  const rx = new Slots();
  const data = new Uint8Array(PAYLOAD_BYTES - 8);
  for (let i = 0; i < tx.size; i++) {
    tx.put(
      i,
      buildEcho({
        src: parseIpv4(SETUP.tunPeer),
        dst: parseIpv4(SETUP.tunLocal),
        type: ICMP_ECHO_REQUEST,
        id: 1,
        seq: i,
        data,
      }),
    );
  }
  const results: CaseResult[] = [];
  try {
    for (const batch of BATCH_SIZES) {
      const round = (per: number) => transferRound(tun.write.bind(tun), tun.read.bind(tun), tx, rx, batch, per);
      results.push(...(await compare("tun write+read", batch, { batch: round(batch), single: round(1) })));
    }
  } finally {
    tun.close();
  }
  return results;
}

/** Datagrams from one socket to another: send + receive, with the addon and with node:dgram. */
async function udpCases(): Promise<CaseResult[]> {
  const options = { port: 0, rcvbuf: 8 << 20, sndbuf: 8 << 20 };
  const a = UdpSocket.open({ ...options, address: SETUP.udpA });
  const b = UdpSocket.open({ ...options, address: SETUP.udpB });
  const tx = new Slots();
  const rx = new Slots();
  for (let i = 0; i < tx.size; i++) {
    tx.put(i, new Uint8Array(PAYLOAD_BYTES).fill(i));
    tx.set(i, { ADDR: parseIpv4(SETUP.udpB), PORT: b.port });
  }
  const results: CaseResult[] = [];
  try {
    for (const batch of BATCH_SIZES) {
      const round = (per: number) => transferRound(a.send.bind(a), b.recv.bind(b), tx, rx, batch, per);
      const node = await dgramPair(batch);
      try {
        results.push(
          ...(await compare("udp send+recv", batch, { batch: round(batch), single: round(1), dgram: node.round })),
        );
      } finally {
        node.close();
      }
    }
  } finally {
    a.close();
    b.close();
  }
  return results;
}

/** The same rounds with node:dgram: `batch` sends, then wait for `batch` 'message' events. */
async function dgramPair(batch: number): Promise<{ round: Round; close: () => void }> {
  const a = dgram.createSocket({ type: "udp4", recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
  const b = dgram.createSocket({ type: "udp4", recvBufferSize: 8 << 20 });
  a.bind(0, SETUP.udpA);
  b.bind(0, SETUP.udpB);
  await Promise.all([once(a, "listening"), once(b, "listening")]);
  const port = b.address().port;
  const payload = Buffer.alloc(PAYLOAD_BYTES, 7);
  let received = 0;
  let roundDone: (() => void) | undefined;
  b.on("message", () => {
    if (++received === batch) roundDone?.();
  });
  const round = async () => {
    received = 0;
    const done = new Promise<void>((resolve) => (roundDone = resolve));
    for (let i = 0; i < batch; i++) a.send(payload, port, SETUP.udpB);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise((resolve) => (timer = setTimeout(resolve, ROUND_TIMEOUT_MS)))]);
    clearTimeout(timer);
    return Math.min(received, batch);
  };
  return { round, close: () => (a.close(), b.close()) };
}

for (const result of [...(await tunCases()), ...(await udpCases())]) console.log(JSON.stringify(result));
