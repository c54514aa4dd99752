// Donating: a member without slots asks (a stream request); this node gives it the upper half of
// its largest free run, keeping one slot for itself while it has no lease, saves the transfer
// (with its entry in the resend list) before anyone hears of it, and answers with its whole ring,
// so an asker that has slots here but still asks learns of them now. Requests run on the serial
// queue, so one slot never goes to two askers.
import type { LeaseCore } from "./core.js";
import type { Ring, SlotSpan } from "./ring.js";
import type { TransferResender } from "./transfer-resend.js";
import type { LeaseMessage } from "./wire.js";

/** The sign of life an asker gives (Reclaimer.activeWhileGone), admitted or not. */
export const ASKED = "asked this node for a subnet";

export class SlotDonor {
  constructor(
    private readonly core: LeaseCore,
    private readonly resend: TransferResender,
  ) {}

  /** Gives the asker slots if it has none here (saved first), and says so with the whole ring;
   *  nothing (as before admission) when admission was revoked while the transfer was saved. */
  async answerRequest(from: string, id: number): Promise<LeaseMessage | undefined> {
    const { core } = this;
    // Before the commit below: its reclaim pass must not take back what the asker is given.
    core.activeWhileGone(from, ASKED, true);
    const next = core.ring.clone();
    const span = this.donation(next, from);
    if (span) {
      const delta = next.transfer(core.name, span, from);
      await core.commit(next, delta, { transfers: this.resend.saved({ to: from, span }) });
      if (!core.admitted) return undefined;
      core.stats.slotsGiven += span.count;
      core.opts.log.info({ code: "LEASE_GAVE", to: from, slots: span }, `gave ${span.count} subnet slot(s) to ${from}`);
      this.resend.track(from, span);
    }
    return { kind: "reply", id, granted: span !== undefined, ring: core.ring.state() };
  }

  /** Which of our free slots to give `asker`: the upper half of our largest free run (subnets
   *  perhaps still in use by a reclaimed node last), keeping one slot for ourselves while we have
   *  no lease. Nothing if the asker already has slots. */
  private donation(ring: Ring, asker: string): SlotSpan | undefined {
    if (ring.leasesOf(asker).length > 0 || ring.freeSpansOf(asker).length > 0) return undefined;
    const spans = this.core.usable(ring.freeSpansOf(this.core.name));
    if (this.core.current === null && spans.length > 0) {
      const first = spans.shift()!;
      if (first.count > 1) spans.unshift({ start: first.start + 1, count: first.count - 1 });
    }
    const largest = spans.reduce<SlotSpan | undefined>(
      (best, s) => (best === undefined || s.count > best.count ? s : best),
      undefined,
    );
    if (!largest) return undefined;
    const count = Math.ceil(largest.count / 2);
    return { start: largest.start + largest.count - count, count };
  }
}
