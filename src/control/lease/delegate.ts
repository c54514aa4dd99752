// Leasing on top of gossip membership: the memberlist Delegate / EventDelegate adapter. It turns
// bytes into lease messages and back, queues the lease layer's broadcasts for piggybacking
// (gossip's TransmitLimitedQueue: about RetransmitMult x log10(N+1) sends each, newest first),
// serves the full ring for push-pull (the control plane puts the subnet in the node record).
// Malformed or foreign messages are counted and dropped, never thrown. A dual-stack node has one
// SubnetLeases per address family, each with its own ring; messages carry their family's network
// fingerprint and go to that family, and push-pull carries every family's ring. Membership's news
// and a ring's sign of life of a gone node go to every family.
import { decode, encode } from "@msgpack/msgpack";
import { type BroadcastTarget, retransmitLimit, TransmitLimitedQueue } from "../gossip/broadcast.js";
import type { Delegate, EventDelegate, NodeView } from "../gossip/delegate.js";
import type { SubnetLeases } from "./subnet-leases.js";
import type { LeaseLogger } from "./types.js";
import type { RingRun } from "./ring.js";
import { decodeMessageFor, encodeMessage, encodeStateBundle, splitStateBundle, type LeaseMessage } from "./wire.js";

export interface LeaseDelegateOptions {
  /** memberlist's RetransmitMult, default 4. */
  readonly retransmitMult?: number;
  /** Queued broadcasts beyond this are dropped, most-sent oldest first (push-pull repairs), default 256. */
  readonly maxQueued?: number;
  /** Ring deltas are split into broadcasts of at most this many bytes, default 512. */
  readonly maxBroadcastBytes?: number;
}

/** Everything of memberlist's Delegate but the node record, which the control plane composes. */
export class LeaseDelegate implements Omit<Delegate, "nodeMeta">, EventDelegate {
  /** Messages dropped as malformed, oversized or from a differently configured network. */
  droppedMessages = 0;
  private readonly queue: TransmitLimitedQueue;
  private readonly maxBroadcastBytes: number;
  /** One lease layer per enabled address family (IPv4 first). */
  private readonly families: readonly SubnetLeases[];

  constructor(
    leases: SubnetLeases | readonly SubnetLeases[],
    membership: { members(): readonly NodeView[] },
    private readonly log: LeaseLogger,
    options: LeaseDelegateOptions = {},
  ) {
    const mult = options.retransmitMult ?? 4;
    this.queue = new TransmitLimitedQueue(
      () => retransmitLimit(mult, membership.members().length),
      options.maxQueued ?? 256,
    );
    this.maxBroadcastBytes = options.maxBroadcastBytes ?? 512;
    this.families = Array.isArray(leases) ? leases : [leases as SubnetLeases];
    for (const l of this.families) {
      l.on("announce", (msg) => this.enqueue(l, msg));
      // A sign of life is the node's: a dual-stack node's IPv6 grace restarts on an IPv4 one too.
      l.on("signOfLife", (node, sign, direct) => {
        for (const other of this.families)
          if (other !== l) other.signOfLifeElsewhere(node, `${sign} (IPv${l.space.family} ring)`, direct);
      });
    }
  }

  notifyMsg(from: string, msg: Uint8Array): void {
    const decoded = this.decode(from, msg);
    if (decoded) decoded.leases.handleMessage(from, decoded.message);
  }

  /** A stream exchange (MembershipPort.request): the lease layer's answer goes back on it. */
  async answerMsg(from: string, msg: Uint8Array): Promise<Uint8Array | undefined> {
    const decoded = this.decode(from, msg);
    const answer = decoded && (await decoded.leases.answer(from, decoded.message));
    return answer && encodeMessage(decoded.leases.space.fingerprint, answer);
  }

  getBroadcasts(overhead: number, limit: number, to?: BroadcastTarget): Uint8Array[] {
    return this.queue.take(overhead, limit, false, to);
  }

  localState(): Uint8Array {
    return encodeStateBundle(
      this.families.map((l) => encodeMessage(l.space.fingerprint, { kind: "state", ring: l.ringState() })),
    );
  }

  mergeRemoteState(state: Uint8Array): void {
    for (const part of splitStateBundle(state)) {
      const decoded = this.decode("push-pull", part);
      if (!decoded) continue;
      if (decoded.message.kind !== "state") {
        this.drop("push-pull", `expected a ring state, got a ${decoded.message.kind} message`);
        continue;
      }
      decoded.leases.mergeRemote(decoded.message.ring, "push-pull");
    }
  }

  notifyJoin(node: NodeView): void {
    for (const l of this.families) l.memberAlive(node.name);
  }

  notifyUpdate(node: NodeView): void {
    for (const l of this.families) {
      if (node.state === "alive" || node.state === "suspect") l.memberAlive(node.name);
      else l.memberGone(node.name); // a dead node later reported as left
    }
  }

  notifyLeave(node: NodeView): void {
    for (const l of this.families) l.memberGone(node.name);
  }

  /** Number of broadcasts waiting (for metrics and tests). */
  get queued(): number {
    return this.queue.size();
  }

  private enqueue(leases: SubnetLeases, msg: LeaseMessage): void {
    const fingerprint = leases.space.fingerprint;
    for (const part of msg.kind === "state" ? this.split(fingerprint, msg.ring.seeds, msg.ring.runs) : [msg]) {
      this.queue.enqueue({ payload: encodeMessage(fingerprint, part) });
    }
  }

  /** Splits a ring delta into messages small enough to piggyback on a gossip packet. */
  private split(fingerprint: string, seeds: readonly string[] | null, runs: readonly RingRun[]): LeaseMessage[] {
    const parts: LeaseMessage[] = [];
    let batch: RingRun[] = [];
    const fits = (candidate: RingRun[]): boolean =>
      encodeMessage(fingerprint, { kind: "state", ring: { seeds, runs: candidate } }).length <= this.maxBroadcastBytes;
    for (const run of runs) {
      if (batch.length > 0 && !fits([...batch, run])) {
        parts.push({ kind: "state", ring: { seeds, runs: batch } });
        batch = [];
      }
      batch.push(run);
    }
    if (batch.length > 0) parts.push({ kind: "state", ring: { seeds, runs: batch } });
    return parts;
  }

  private decode(from: string, bytes: Uint8Array): { leases: SubnetLeases; message: LeaseMessage } | undefined {
    try {
      const { fingerprint, message } = decodeMessageFor(
        this.families.map((l) => l.space.fingerprint),
        bytes,
      );
      return { leases: this.families.find((l) => l.space.fingerprint === fingerprint)!, message };
    } catch (err) {
      this.drop(from, (err as Error).message, (err as { code?: string }).code);
      return undefined;
    }
  }

  private drop(from: string, why: string, code = "LEASE_BAD_MESSAGE"): void {
    this.droppedMessages++;
    this.log.warn({ code, from, dropped: this.droppedMessages }, why);
  }
}

/** The lease part of a node's membership record: its subnet (CIDR) or null per enabled address
 *  family, IPv4 first. */
export function encodeLeaseMeta(...subnets: Array<string | null>): Uint8Array {
  return encode([1, ...subnets]);
}

/** Reads encodeLeaseMeta's bytes; undefined if they are not a lease record. `subnet` is the
 *  first family's, `subnets` all of them. */
export function decodeLeaseMeta(
  meta: Uint8Array,
): { subnet: string | null; subnets: Array<string | null> } | undefined {
  try {
    const v = decode(meta, { maxStrLength: 64, maxBinLength: 0, maxExtLength: 0, maxMapLength: 0, maxArrayLength: 3 });
    if (
      Array.isArray(v) &&
      v.length >= 2 &&
      v[0] === 1 &&
      v.slice(1).every((x) => x === null || typeof x === "string")
    ) {
      const subnets = v.slice(1) as Array<string | null>;
      return { subnet: subnets[0], subnets };
    }
  } catch {
    // not ours
  }
  return undefined;
}
