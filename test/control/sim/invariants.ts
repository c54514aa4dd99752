// The simulator's invariants, checked after every event.
// Membership (MembershipInvariants):
//   1. a running node sees itself alive (until it starts leaving);
//   2. what an observer (one run of a node) believes about a subject only moves forward in the
//      order (incarnation, alive < suspect < dead < left): no rollback, no resurrection at the same
//      or a lower incarnation;
//   3. nobody believes an incarnation the subject never issued.
// Leases (LeaseInvariants), in every address family, on ranges (a ring of 2^32 slots costs what a
// small one does), counting a crashed node by the state it saved (it comes back with it) unless it
// was declared gone for good:
//   4. no two nodes hold one subnet;
//   5. no slot is "mine" in two nodes' own views;
//   6. a running node that has not reached its cluster (its join round settled with no name
//      conflict) holds no subnet but the one it started with (from its saved state), its ring
//      shows no lease of its name but that one and those another view shows (learned, not
//      written), it asked nobody for slots, gave and reclaimed none (its stats), and logged no
//      write for its name (a fork settled, an extra lease freed): a node whose name turns out
//      taken must leave no trace in the ring (issue 14).
// Nodes of one name are one owner to the ring (two processes with one name are membership's to
// refuse), so they are never compared with each other.
import type { MemberState } from "../../../src/control/gossip/delegate.js";
import type { Memberlist } from "../../../src/control/gossip/memberlist.js";
import type { SubnetLeases } from "../../../src/control/lease/subnet-leases.js";
import type { RingRun } from "../../../src/control/lease/ring.js";
import type { LeaseSpace } from "../../../src/control/lease/slots.js";
import type { PersistedLeaseState } from "../../../src/control/lease/store.js";

const RANK: Record<MemberState, number> = { alive: 0, suspect: 1, dead: 2, left: 3 };

/** What the invariants read of a simulated cluster (SimCluster, which checks them after every event). */
export interface ObservedCluster {
  liveNodes(): Array<{ readonly name: string; readonly runs: number; readonly leaving: boolean; ml(): Memberlist }>;
  describe(): string;
}

export class InvariantViolation extends Error {}

export class MembershipInvariants {
  private readonly last = new Map<string, { incarnation: number; rank: number }>();
  private readonly maxIssued = new Map<string, number>();
  checks = 0;

  constructor(private readonly cluster: ObservedCluster) {}

  check(): void {
    this.checks++;
    const running = this.cluster.liveNodes();
    for (const node of running) {
      const self = node.ml().localNode();
      if (self.state !== "alive" && !node.leaving) this.fail(`${node.name} sees itself ${self.state}`);
      this.maxIssued.set(node.name, Math.max(this.maxIssued.get(node.name) ?? 0, self.incarnation));
    }
    for (const node of running) {
      for (const v of node.ml().allMembers()) {
        const issued = this.maxIssued.get(v.name);
        if (issued !== undefined && v.incarnation > issued) {
          this.fail(`${node.name} believes ${v.name} at incarnation ${v.incarnation}, never issued (max ${issued})`);
        }
        const key = `${node.name}#${node.runs}/${v.name}`;
        const prev = this.last.get(key);
        const rank = RANK[v.state];
        if (prev && (v.incarnation < prev.incarnation || (v.incarnation === prev.incarnation && rank < prev.rank))) {
          this.fail(
            `${node.name} moved ${v.name} back from (${prev.incarnation}, rank ${prev.rank}) to (${v.incarnation}, ${v.state})`,
          );
        }
        this.last.set(key, { incarnation: v.incarnation, rank });
      }
    }
  }

  private fail(what: string): never {
    throw new InvariantViolation(`invariant violated (${this.cluster.describe()}): ${what}`);
  }
}

/** What the lease invariants read of a simulated cluster (SimControlPlanes). */
export interface ObservedLeases {
  readonly spaces: readonly LeaseSpace[];
  /** Nodes an operator reclaimed: their saved state no longer counts. */
  readonly gone: ReadonlySet<string>;
  leaseNodes(): Array<{
    readonly name: string;
    /** The running lease layers (one per family), or undefined while crashed. */
    readonly families: readonly SubnetLeases[] | undefined;
    readonly stores: ReadonlyArray<{ readonly saved: PersistedLeaseState | null }>;
    /** While it runs and has not reached its cluster: the slots it held once started, per family
     *  (undefined while starting), the nodes it asked for slots and the log codes of what it wrote
     *  for its name since it started. */
    readonly unreached?: {
      readonly held: ReadonlyArray<number | undefined> | undefined;
      readonly asked: readonly string[];
      readonly wrote: readonly string[];
    };
  }>;
  describe(): string;
}

type LeaseNode = ReturnType<ObservedLeases["leaseNodes"]>[number];

export class LeaseInvariants {
  checks = 0;

  constructor(private readonly cluster: ObservedLeases) {}

  check(): void {
    this.checks++;
    const nodes = this.cluster.leaseNodes().filter((n) => n.families || !this.cluster.gone.has(n.name));
    for (const n of nodes) {
      if (!n.unreached) continue;
      if (n.unreached.asked.length > 0)
        this.fail(`${n.name} asked ${n.unreached.asked.join(", ")} for slots before reaching its cluster`);
      if (n.unreached.wrote.length > 0)
        this.fail(`${n.name} logged ${n.unreached.wrote.join(", ")} before reaching its cluster`);
      for (const l of n.families ?? [])
        if (l.stats.slotsGiven > 0 || l.stats.slotsReclaimed > 0)
          this.fail(
            `${n.name} gave ${l.stats.slotsGiven} and reclaimed ${l.stats.slotsReclaimed} slot(s) before reaching its cluster`,
          );
    }
    this.cluster.spaces.forEach((space, f) => {
      const held: Array<{ slot: number; node: string }> = [];
      const mine: Array<{ start: number; end: number; node: string }> = [];
      for (const n of nodes) {
        const runs = n.families ? n.families[f].ringState().runs : (n.stores[f].saved?.ring.runs ?? []);
        const slot = n.families
          ? n.families[f].currentLease()?.slot
          : runs.find((r) => r.owner === n.name && r.leased)?.start;
        if (slot !== undefined) held.push({ slot, node: n.name });
        if (n.families && n.unreached?.held) this.unreachedLeases(n, runs, slot, n.unreached.held[f], space, nodes, f);
        for (const r of runs)
          if (r.owner === n.name) mine.push({ start: r.start, end: r.start + r.count, node: n.name });
      }
      held.sort((a, b) => a.slot - b.slot);
      held.forEach((h, i) => {
        const next = held[i + 1];
        if (next && next.slot === h.slot && next.node !== h.node)
          this.fail(`${h.node} and ${next.node} both hold ${space.subnetOf(h.slot)}`);
      });
      mine.sort((a, b) => a.start - b.start);
      let reach = { end: -1, node: "" };
      for (const r of mine) {
        if (r.start < reach.end && r.node !== reach.node)
          this.fail(`slot ${r.start} is owned by both ${reach.node} and ${r.node} in their own views`);
        if (r.end > reach.end) reach = { end: r.end, node: r.node };
      }
    });
  }

  /** Before reaching its cluster a node holds no subnet but the one it started with, and its ring
   *  shows no lease of its name but that one and those another view shows (learned): it leased
   *  nothing itself. */
  private unreachedLeases(
    n: LeaseNode,
    runs: readonly RingRun[],
    slot: number | undefined,
    held: number | undefined,
    space: LeaseSpace,
    nodes: readonly LeaseNode[],
    f: number,
  ): void {
    if (slot !== undefined && slot !== held)
      this.fail(
        `${n.name} holds ${space.subnetOf(slot)} before reaching its cluster (started with ${held === undefined ? "none" : space.subnetOf(held)})`,
      );
    for (const r of runs) {
      if (r.owner !== n.name || !r.leased || r.start === held) continue;
      const learnt = nodes.some((o) => {
        if (o === n) return false;
        const theirs = o.families ? o.families[f].ringState().runs : (o.stores[f].saved?.ring.runs ?? []);
        return theirs.some(
          (t) =>
            t.owner === n.name &&
            t.leased &&
            t.start <= r.start &&
            r.start < t.start + t.count &&
            t.version >= r.version,
        );
      });
      if (!learnt)
        this.fail(
          `${n.name}'s ring shows it leased ${space.subnetOf(r.start)}, which no other view shows, before reaching its cluster`,
        );
    }
  }

  private fail(what: string): never {
    throw new InvariantViolation(`invariant violated (${this.cluster.describe()}): ${what}`);
  }
}
