// Lifeguard suspicion timer (LHA-Suspicion). A suspected node gets the longest timeout at first;
// every independent confirmation (another member also suspecting it) shortens it on a log scale,
// down to the minimum after k confirmations. A lone slow accuser therefore gives its victim the
// most time to refute.
import type { Clock, TimerHandle } from "../runtime.js";

export interface SuspicionBounds {
  readonly minMs: number;
  readonly maxMs: number;
  /** Confirmations wanted to reach minMs (0: no peers to confirm, minMs from the start). */
  readonly k: number;
}

/** The shortest suspicion, in probe intervals, whatever the mult and cluster size. */
export const MIN_SUSPICION_PROBES = 3;

/**
 * Bounds for a cluster of liveCount members: min = mult × max(1, log10 N) × probeInterval (at
 * least MIN_SUSPICION_PROBES probe intervals),
 * max = maxMult × min, k = confirmations. memberlist ties k to mult (k = mult − 2); weft sets it
 * apart, so that a short minimum can still ask for several independent accusers (see config.ts,
 * suspicionConfirmations). When fewer than k other members could confirm, nobody can shorten the
 * timer: it runs the maximum (memberlist runs the minimum, which is short with a small mult).
 */
export function suspicionBounds(
  suspicionMult: number,
  maxTimeoutMult: number,
  confirmations: number,
  liveCount: number,
  probeIntervalMs: number,
): SuspicionBounds {
  const nodeScale = Math.max(1, Math.log10(Math.max(1, liveCount)));
  // Never under three probe intervals: with a small mult (LAN: 1) a cluster under 1,000 members
  // would get less than a slow member needs to refute (its suspect news arrives late, its own
  // gossip timer may run late too). The simulator found false deaths with 5% loss at 1 s, and
  // rarer ones at 2 s (about 1 run in 200 of the gossip-sim property; CI hit one); LAN at 1,000
  // members has 3 s anyway.
  const minMs = Math.max(
    MIN_SUSPICION_PROBES * probeIntervalMs,
    Math.floor(suspicionMult * nodeScale * probeIntervalMs),
  );
  const maxMs = minMs * maxTimeoutMult;
  if (liveCount - 2 < confirmations) return { minMs: maxMs, maxMs, k: 0 };
  return { minMs, maxMs, k: confirmations };
}

/** The timeout after n of k confirmations: max − (max − min) × log(n + 1) / log(k + 1), at least min. */
export function suspicionTimeout(n: number, b: SuspicionBounds): number {
  if (b.k < 1) return b.minMs;
  const fraction = Math.log(n + 1) / Math.log(b.k + 1);
  return Math.max(b.minMs, Math.floor(b.maxMs - fraction * (b.maxMs - b.minMs)));
}

export class Suspicion {
  private readonly confirmedBy = new Set<string>();
  private readonly startedAt: number;
  private timer: TimerHandle;

  /** `from` started the suspicion; it never counts as a confirmation (its gossip comes back to us). */
  constructor(
    private readonly clock: Clock,
    from: string,
    private readonly bounds: SuspicionBounds,
    private readonly onTimeout: () => void,
  ) {
    this.confirmedBy.add(from);
    this.startedAt = clock.now();
    this.timer = clock.setTimer(suspicionTimeout(0, bounds), onTimeout);
  }

  confirmations(): number {
    return this.confirmedBy.size - 1;
  }

  /** Records a confirmation; true if it was new (worth re-gossiping so others count it too). */
  confirm(from: string): boolean {
    if (this.confirmations() >= this.bounds.k || this.confirmedBy.has(from)) return false;
    this.confirmedBy.add(from);
    const remaining = suspicionTimeout(this.confirmations(), this.bounds) - (this.clock.now() - this.startedAt);
    this.clock.cancel(this.timer);
    this.timer = this.clock.setTimer(Math.max(0, remaining), this.onTimeout);
    return true;
  }

  cancel(): void {
    this.clock.cancel(this.timer);
  }
}
