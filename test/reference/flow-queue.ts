// Reference for the send path's flow queue (assembly/packet/flow-queue.ts) and flow tags, written
// for clarity: the flow hash as plain arithmetic over the packet's bytes, and the queue as arrays
// of packets per bucket with fq_codel's new and old lists, deficit round robin and head drop of
// the fattest.

export const REF_FQ_BUCKETS = 1024;

const mix = (h: number, w: number): number => {
  const x = (h ^ w) >>> 0;
  return Math.imul(((x << 13) | (x >>> 19)) >>> 0, 0x9e3779b1) >>> 0;
};
const le32 = (p: Uint8Array, at: number): number =>
  (p[at] | (p[at + 1] << 8) | (p[at + 2] << 16) | (p[at + 3] << 24)) >>> 0;
const le16 = (p: Uint8Array, at: number): number => p[at] | (p[at + 1] << 8);

/** The bytes that name a packet's flow beyond its addresses and protocol (as the Wasm reads them). */
function transportKey(p: Uint8Array, at: number, proto: number, icmp: number): number {
  const rest = p.length - at;
  if ((proto === 6 || proto === 17) && rest >= 4) return le32(p, at);
  if (proto === icmp && rest >= 6) return le16(p, at + 4);
  return 0;
}

/** The flow hash's default seed (the send path's flow tags). */
const DEFAULT_SEED = 0x5bd1e995;

/** A packet's flow hash (assembly/packet/flow-hash.ts): addresses, protocol, ports (or ICMP echo identifier). */
function refFlowHash(p: Uint8Array, seed = DEFAULT_SEED): number {
  let h = seed >>> 0;
  const version = p.length > 0 ? p[0] >> 4 : 0;
  if (version === 4 && p.length >= 20) {
    const ihl = (p[0] & 15) << 2;
    const proto = p[9];
    h = mix(mix(mix(h, le32(p, 12)), le32(p, 16)), proto);
    const fragOffset = ((p[6] << 8) | p[7]) & 0x1fff;
    if (fragOffset === 0 && ihl >= 20) h = mix(h, transportKey(p, ihl, proto, 1));
  } else if (version === 6 && p.length >= 40) {
    for (let i = 8; i < 40; i += 4) h = mix(h, le32(p, i));
    h = mix(mix(h, p[6]), transportKey(p, 40, p[6], 58));
  }
  h = (h ^ (h >>> 16)) >>> 0;
  return Math.imul(h, 0x85ebca6b) >>> 0;
}

/** The flow queue's bucket of a packet, under the queue's seed: the hash's top 10 bits. */
export function refFlowBucket(p: Uint8Array, seed: number): number {
  return refFlowHash(p, seed) >>> 22;
}

/** The send path's flow tag of a single datagram (DESC_FLOW_TAG_SHIFT): the hash's top 15 bits, 0 taken as 1. */
export function refFlowTag(p: Uint8Array): number {
  return refFlowHash(p) >>> 17 || 1;
}

export interface RefPacket {
  id: number;
  bucket: number;
  len: number;
}

interface Bucket {
  packets: RefPacket[];
  deficit: number;
  list: "none" | "new" | "old";
}

export class ReferenceFlowQueue {
  private readonly buckets: Bucket[] = Array.from({ length: REF_FQ_BUCKETS }, () => ({
    packets: [],
    deficit: 0,
    list: "none" as const,
  }));
  private readonly newFlows: number[] = [];
  private readonly oldFlows: number[] = [];
  dropped = 0;

  constructor(
    private readonly limit: number,
    private readonly quantum: number,
  ) {}

  /** Whether a new flow waits whose bytes fit its quantum (the worker stops reading ahead then). */
  get sparseWaiting(): boolean {
    return this.newFlows.some((i) => this.buckets[i].packets.reduce((n, p) => n + p.len, 0) <= this.quantum);
  }

  get backlog(): number {
    return this.buckets.reduce((n, b) => n + b.packets.length, 0);
  }

  /** Queues the packets in order, then drops the fattest flow's oldest while over the limit; the ids dropped. */
  enqueue(packets: RefPacket[]): number[] {
    for (const p of packets) {
      const b = this.buckets[p.bucket];
      b.packets.push(p);
      if (b.list === "none") {
        b.list = "new";
        b.deficit = this.quantum;
        this.newFlows.push(p.bucket);
      }
    }
    const dropped: number[] = [];
    while (this.backlog > this.limit) {
      // The fattest; of equals, the lowest index.
      let fattest = 0;
      for (let i = 1; i < REF_FQ_BUCKETS; i++)
        if (this.buckets[i].packets.length > this.buckets[fattest].packets.length) fattest = i;
      const excess = this.backlog - this.limit;
      dropped.push(...this.buckets[fattest].packets.splice(0, excess).map((p) => p.id));
    }
    this.dropped += dropped.length;
    return dropped;
  }

  /** Up to `max` packets in deficit round robin order, new flows first. */
  dequeue(max: number): RefPacket[] {
    const out: RefPacket[] = [];
    while (out.length < max) {
      const fromNew = this.newFlows.length > 0;
      const list = fromNew ? this.newFlows : this.oldFlows;
      if (list.length === 0) break;
      const i = list[0];
      const b = this.buckets[i];
      if (b.deficit <= 0) {
        b.deficit += this.quantum;
        list.shift();
        b.list = "old";
        this.oldFlows.push(i);
        continue;
      }
      if (b.packets.length === 0) {
        list.shift();
        // A new flow that emptied goes behind the old ones, so that it cannot starve them by coming back as new.
        if (fromNew && this.oldFlows.length > 0) {
          b.list = "old";
          this.oldFlows.push(i);
        } else b.list = "none";
        continue;
      }
      const p = b.packets.shift()!;
      b.deficit -= p.len;
      out.push(p);
    }
    return out;
  }
}
