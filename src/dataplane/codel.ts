// CoDel (Nichols and Jacobson; RFC 8289) as the dataplane applies it to a socket's receive queue:
// the queue stands while full batches bring datagrams older than the target; once it has stood for
// a whole interval, every datagram over the target is dropped at the head for as long as batches
// show the head above target. A late thread (not scheduled for a while) or a burst shorter than the
// interval costs nothing, so TCP is not punished for the machine's hiccups. A queue that stands
// again soon after a dropping state ended is the same overload, not a new one: as RFC 8289 resumes
// its drop rate then, we drop again at once instead of waiting another interval, during which a
// flood that never backs off would refill the buffer (4 MiB, tens of milliseconds) every time. The
// ages come from the kernel's receive timestamps (udpRecv's `late` count); the clock is passed in,
// so tests drive it.

/** How long a queue must stand above target before drops begin, as in CoDel. */
export const CODEL_INTERVAL_MS = 100;
/** How long after a dropping state ended a standing queue resumes dropping at once (RFC 8289's 16 intervals). */
export const CODEL_MEMORY_MS = 16 * CODEL_INTERVAL_MS;

export class CoDel {
  /** Whether the next read drops its late datagrams. */
  dropping = false;
  /** Since when the queue stands (−1: it does not). */
  private aboveSince = -1;
  /** When the last dropping state ended. */
  private droppedUntil = -Infinity;

  constructor(private readonly batchSize: number) {}

  /**
   * One batch read: `kept` datagrams in it, `late` over the target (dropped when read while
   * `dropping`, else among the kept).
   */
  observe(kept: number, late: number, nowMs: number): void {
    const full = kept + (this.dropping ? late : 0) === this.batchSize;
    // Still above target: a full batch with late datagrams, or, while dropping, nothing fresh read.
    if (late > 0 && (full || (this.dropping && kept === 0))) {
      if (this.dropping) return;
      if (this.aboveSince < 0) this.aboveSince = nowMs;
      if (nowMs - this.aboveSince >= CODEL_INTERVAL_MS || nowMs - this.droppedUntil < CODEL_MEMORY_MS)
        this.dropping = true;
    } else {
      this.aboveSince = -1;
      if (this.dropping) this.droppedUntil = nowMs;
      this.dropping = false;
    }
  }
}
