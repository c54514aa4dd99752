// Resending transfers until their receiver has them. A committed transfer must reach its receiver,
// whatever was lost: the reply (a broken stream, a timeout), the broadcast (a giver that knows no
// members, as a restarted node without a join list), or the receiver's own save (a full disk). So
// the giver delivers it again, with backoff (retryMinMs doubling to retryMaxMs), as a ring state
// the receiver answers with its view of those slots, until that view has them at the transfer's
// version or newer, or the slots are no longer the receiver's here (given on, reclaimed). The list
// is saved with the ring (the transfer and its entry in one save), so a giver restarted before the
// receiver answered resends it too; an entry acknowledged since the last save is resent once after
// a restart, which the receiver answers at once.
import type { TimerHandle } from "../runtime.js";
import type { LeaseCore } from "./core.js";
import type { RingRun, SlotSpan } from "./ring.js";
import type { SavedTransfer } from "./store.js";
import { decodeMessage } from "./wire.js";

interface Unacknowledged {
  spans: SlotSpan[];
  timer: TimerHandle | null;
  delay: number;
}

export class TransferResender {
  /** Transfers this node made that the receiver has not yet shown it knows, by receiver. */
  private readonly gifts = new Map<string, Unacknowledged>();

  constructor(private readonly core: LeaseCore) {}

  /** The list to save: every unacknowledged transfer, plus `to` getting `span` if given. */
  saved(extra?: { to: string; span: SlotSpan }): SavedTransfer[] {
    const out = [...this.gifts].map(([to, g]) => ({ to, spans: [...g.spans] }));
    if (extra) {
      const entry = out.find((t) => t.to === extra.to);
      if (entry) entry.spans.push(extra.span);
      else out.push({ to: extra.to, spans: [extra.span] });
    }
    return out;
  }

  /** Starts resending a transfer just committed. */
  track(to: string, span: SlotSpan): void {
    const gift = this.gifts.get(to) ?? { spans: [], timer: null, delay: this.core.opts.retryMinMs };
    gift.spans.push(span);
    this.gifts.set(to, gift);
    if (!gift.timer) gift.timer = this.core.after(gift.delay, () => void this.deliver(to));
  }

  /** Resumes the saved list after a restart (spans outside the ring are dropped). */
  restore(saved: readonly SavedTransfer[]): void {
    const slots = this.core.ring.slotCount;
    for (const t of saved)
      for (const span of t.spans)
        if (span.start + span.count <= slots && t.to !== this.core.name) this.track(t.to, span);
  }

  stop(): void {
    this.gifts.clear();
  }

  private async deliver(to: string): Promise<void> {
    const { core } = this;
    const gift = this.gifts.get(to);
    if (!gift) return;
    gift.timer = null;
    const given = core.ring.runsIn(gift.spans).filter((r) => r.owner === to);
    if (given.length === 0) {
      this.gifts.delete(to);
      return;
    }
    let shown: RingRun[] | undefined;
    try {
      const answer = await core.opts.membership.request(
        to,
        core.encode({ kind: "state", ring: { seeds: core.ring.seeds, runs: given } }),
      );
      const decoded = answer && decodeMessage(core.opts.space.fingerprint, answer);
      if (decoded && decoded.kind === "state") shown = [...decoded.ring.runs];
    } catch {
      // unreachable or unknown to membership for now: try again later
    }
    if (core.stopped || this.gifts.get(to) !== gift) return;
    if (shown && covers(shown, given)) {
      this.gifts.delete(to);
      return;
    }
    gift.delay = Math.min(gift.delay * 2, core.opts.retryMaxMs);
    gift.timer = core.after(gift.delay, () => void this.deliver(to));
  }
}

/** Whether `shown` (runs in slot order) has every slot of `given` at its version or newer. */
function covers(shown: readonly RingRun[], given: readonly RingRun[]): boolean {
  return given.every((g) => {
    let at = g.start;
    const end = g.start + g.count;
    for (const r of shown) {
      if (r.start + r.count <= at) continue;
      if (r.start > at || r.version < g.version) return false;
      at = r.start + r.count;
      if (at >= end) return true;
    }
    return false;
  });
}
