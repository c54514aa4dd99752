// Membership invariants, checked after every simulator event:
//   1. a running node sees itself alive (until it starts leaving);
//   2. what an observer (one run of a node) believes about a subject only moves forward in the
//      order (incarnation, alive < suspect < dead < left): no rollback, no resurrection at the same
//      or a lower incarnation;
//   3. nobody believes an incarnation the subject never issued.
import type { MemberState } from "../../../src/control/gossip/delegate.js";
import type { Memberlist } from "../../../src/control/gossip/memberlist.js";

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
