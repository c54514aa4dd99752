// What the lease layer shows the rest of weft: its options and their production defaults, the
// membership it needs, what it reports (leases, reservations, reclaims, counters) and its events.
import type { WeftError } from "../../errors.js";
import type { NodeView } from "../gossip/delegate.js";
import type { Clock, Random } from "../runtime.js";
import type { Conflict } from "./ring.js";
import type { LeaseSpace } from "./slots.js";
import type { LeaseStateStore } from "./store.js";
import type { LeaseMessage } from "./wire.js";

/** What leasing needs from gossip membership (the Memberlist offers this). */
export interface MembershipPort {
  localNode(): { readonly name: string };
  /** Alive and suspect members. */
  members(): readonly NodeView[];
  /** Every member the gossip layer knows, dead and left ones included. */
  allMembers(): readonly NodeView[];
  /** A stream exchange: delivers msg to the peer's lease layer (SubnetLeases.answer) and resolves
   *  to its answer from the same stream (undefined: none); rejects if it cannot. */
  request(name: string, msg: Uint8Array): Promise<Uint8Array | undefined>;
  /** Re-announces this node's meta (it carries the lease). */
  updateNode(): void;
}

/** The part of a pino logger used here. */
export interface LeaseLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface Lease {
  readonly slot: number;
  /** CIDR, e.g. "198.19.7.0/24". */
  readonly subnet: string;
}

export interface PeerLease extends Lease {
  readonly node: string;
}

export interface ReclaimReport {
  readonly node: string;
  /** Slots of the node this node took over as heir. */
  readonly takenHere: number;
  /** Slots of the node that remain with it in this node's view (other heirs take them). */
  readonly remaining: number;
  /** Nodes told to take over the rest. */
  readonly notified: readonly string[];
}

export interface Reservation {
  readonly node: string;
  /** Slots (subnets) the node owns in this view. */
  readonly slots: number;
  /** The subnet it used, if any. */
  readonly subnet: string | null;
  /** When this node's grace timer reclaims it (wall-clock ms, as of now); null when no timer runs here. */
  readonly reclaimAt: number | null;
  /** Already condemned (by an operator or the grace period); its heirs take the slots. */
  readonly condemned: boolean;
}

export interface SubnetLeasesOptions {
  readonly space: LeaseSpace;
  /** The same list (in any order) on every seed node; other nodes may have it too or leave it out. */
  readonly seeds?: readonly string[];
  readonly membership: MembershipPort;
  readonly store: LeaseStateStore;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: LeaseLogger;
  /** Automatic reclaim of a dead node's slots, default 24 h. */
  readonly reclaimGraceMs?: number;
  /** How long to wait for a donor's reply, default 5 s. */
  readonly requestTimeoutMs?: number;
  /** Backoff between rounds of asking, default 1 s doubling to 30 s. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** How long a seed with no saved state waits to hear the cluster, default 10 s. */
  readonly bootstrapQuietMs?: number;
  /** How often the same waiting reason is logged again, default 60 s. */
  readonly waitLogEveryMs?: number;
}

/** The production defaults of SubnetLeasesOptions' timings. */
export const LEASE_DEFAULTS: LeaseTimings = Object.freeze({
  reclaimGraceMs: 24 * 3600_000,
  requestTimeoutMs: 5_000,
  retryMinMs: 1_000,
  retryMaxMs: 30_000,
  bootstrapQuietMs: 10_000,
  waitLogEveryMs: 60_000,
});

export type LeaseTimings = Required<
  Pick<
    SubnetLeasesOptions,
    "reclaimGraceMs" | "requestTimeoutMs" | "retryMinMs" | "retryMaxMs" | "bootstrapQuietMs" | "waitLogEveryMs"
  >
>;

/** SubnetLeasesOptions with every timing filled in. */
export type ResolvedLeaseOptions = Required<Omit<SubnetLeasesOptions, "seeds">> & {
  seeds: readonly string[] | undefined;
};

export interface LeaseStats {
  /** Remote states refused (inconsistent, other seeds, malformed). */
  refusedStates: number;
  /** Own slots that a merge gave to another node (reclaimed while alive, or a rolled-back state). */
  slotsTakenFromUs: number;
  slotsGiven: number;
  slotsReclaimed: number;
}

export type LeaseEvents = {
  /** This node got a subnet (after start, or after losing one). */
  lease: [Lease];
  /** This node's subnet was taken by the cluster (see LEASE_LOST). */
  lost: [Lease];
  /** The ring's leases changed. */
  peers: [readonly PeerLease[]];
  /** For the gossip delegate: a message to broadcast (ring changes, reclaim notices). */
  announce: [LeaseMessage];
  inconsistency: [WeftError, readonly Conflict[]];
  /** A node gone in membership showed it is alive in this ring: node, the sign, whether it asked itself. */
  signOfLife: [string, string, boolean];
};
