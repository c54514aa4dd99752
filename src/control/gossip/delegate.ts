// How a layer above membership (the subnet lease ring) rides on gossip, as memberlist's Delegate:
// it contributes a small per-node record, piggybacks its own broadcasts on gossip packets, sends
// direct messages, and takes part in push-pull anti-entropy.
import type { BroadcastTarget } from "./broadcast.js";

export interface Delegate {
  /** This node's application record (VTEP MAC, backend type and data, subnets), at most `limit` bytes. */
  nodeMeta(limit: number): Uint8Array;
  /** A message of this layer arrived, by broadcast or directly. */
  notifyMsg(from: string, msg: Uint8Array): void;
  /** Optional: a message sent with Memberlist.request arrived; the bytes returned go back to the
   *  sender on the same stream (undefined: a plain ack). Without it, notifyMsg takes the message. */
  answerMsg?(from: string, msg: Uint8Array): Promise<Uint8Array | undefined>;
  /** Broadcasts to piggyback, each at most `limit` bytes after `overhead`; newest first. `to`: the
   *  packet's receiver (TransmitLimitedQueue.take sends a broadcast to distinct members). */
  getBroadcasts(overhead: number, limit: number, to?: BroadcastTarget): Uint8Array[];
  /** Full state for push-pull (join = true on the join exchange). */
  localState(join: boolean): Uint8Array;
  /** Merges a peer's full state received by push-pull. */
  mergeRemoteState(state: Uint8Array, join: boolean): void;
}

/** Membership changes, for the layers above (lease ring, backend programming). */
export interface EventDelegate {
  notifyJoin(node: NodeView): void;
  notifyUpdate(node: NodeView): void;
  /** The node was declared dead or left gracefully (see node.state). A dead node that is later
   *  reported as left gets notifyUpdate with state "left". */
  notifyLeave(node: NodeView): void;
  /** Optional, for metrics and tests: the node is now suspected (it may still refute). */
  notifySuspect?(node: NodeView): void;
}

export const MEMBER_STATES = ["alive", "suspect", "dead", "left"] as const;
export type MemberState = (typeof MEMBER_STATES)[number];

export interface NodeView {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly incarnation: number;
  readonly state: MemberState;
  /** The Delegate.nodeMeta bytes the node last announced. */
  readonly meta: Uint8Array;
}
