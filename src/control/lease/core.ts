// What the lease layer's concern modules (bootstrap, acquiring, donating, resending transfers,
// reclaiming) share through their coordinator, SubnetLeases: the saved ring and this node's lease,
// the one way to change them (commit, on the serial queue), timers that stop with the layer, and
// membership. Each module holds only its own state machine's fields.
import type { WeftError } from "../../errors.js";
import type { MemberState, NodeView } from "../gossip/delegate.js";
import type { TimerHandle } from "../runtime.js";
import type { Conflict, Ring, RingRun, RingState, SlotSpan } from "./ring.js";
import type { SavedTransfer, VacatedSlot } from "./store.js";
import type { Lease, LeaseStats, ResolvedLeaseOptions } from "./types.js";
import type { LeaseMessage } from "./wire.js";

/** Where a ring state came from: a gossiped delta (re-broadcast if it teaches us something), a
 *  whole ring in a push-pull (after the members it carried were merged), or another whole ring (a
 *  donor's reply, ...). */
export type RingSource = "gossip" | "push-pull" | "full";

/** What a commit saves with the ring, when the caller changes it. */
export interface CommitSaved {
  readonly transfers?: readonly SavedTransfer[];
  readonly vacated?: readonly VacatedSlot[];
}

export interface LeaseCore {
  readonly name: string;
  readonly opts: ResolvedLeaseOptions;
  readonly stats: LeaseStats;
  /** The saved ring: what gossip, peers() and the lease see. Only commit() replaces it. */
  readonly ring: Ring;
  /** This node's subnet, or null while it has none. */
  readonly current: Lease | null;
  /** start() has loaded the saved state, so messages can be answered. */
  readonly ready: boolean;
  /** This node reached its cluster under its name (SubnetLeases.admit): until then it takes,
   *  asks for and gives no slots and writes nothing in the ring for its name. */
  readonly admitted: boolean;
  readonly stopped: boolean;
  /** Saves `next` with what goes with it (the transfers still to be acknowledged and the vacated
   *  subnets: those in `saved`, or the resend list and the Reclaimer's marks still standing in
   *  `next`), then makes it the ring everyone sees and announces `delta`. */
  commit(next: Ring, delta: readonly RingRun[], saved?: CommitSaved): Promise<void>;
  /** Counts, logs and reports a remote state that cannot be merged (LEASE_INCONSISTENT, ...). */
  refuse(error: WeftError, conflicts: readonly Conflict[]): void;
  /** Merges a remote ring state (saved first when it changes anything). */
  merge(state: RingState, source: RingSource): Promise<void>;
  /** Runs lease work one task at a time; a failure is logged (and retried while there is no lease). */
  enqueue(task: () => Promise<void> | void): Promise<void>;
  /** A timer cancelled by stop(); it does nothing once stopped. */
  after(ms: number, fn: () => void): TimerHandle;
  cancel(handle: TimerHandle | undefined): void;
  /** Broadcasts a message through gossip (ring changes, reclaim notices). */
  announce(msg: LeaseMessage): void;
  /** Gets a subnet if this node has none and nothing is under way (queued on the serial queue). */
  kickAcquire(): void;
  /** A sign that `node`, gone in membership, was alive later than this view knew (Reclaimer);
   *  `direct`: it asked itself. */
  activeWhileGone(node: string, sign: string, direct: boolean): void;
  /** Free spans of this node's, less the subnets a reclaimed node may still use (Reclaimer);
   *  all of them when nothing else is left. */
  usable(spans: SlotSpan[]): SlotSpan[];
  /** Alive and suspect members other than this node. */
  otherMembers(): NodeView[];
  isMember(node: string): boolean;
  /** The state of every node membership knows (tombstones included). */
  memberStates(): Map<string, MemberState>;
  encode(msg: LeaseMessage): Uint8Array;
}
