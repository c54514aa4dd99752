// CoDel (Nichols and Jacobson) as the dataplane applies it to a socket's receive queue: the queue
// stands while full batches bring datagrams older than the target; once it has stood for a whole
// interval, every datagram over the target is dropped at the head, until a batch shows the head
// below target again. A late thread (not scheduled for a while) or a burst shorter than the
// interval costs nothing, so TCP is not punished for the machine's hiccups, while under a flood
// nothing waits much longer than the target. The ages come from the kernel's receive timestamps
// (udpRecv's `late` count); the clock is passed in, so tests drive it.

/** How long a queue must stand above target before drops begin, as in CoDel. */
export const CODEL_INTERVAL_MS = 100;

export class CoDel {
  /** Whether the next read drops its late datagrams. */
  dropping = false;
  private aboveSince = -1;

  constructor(private readonly batchSize: number) {}

  /**
   * One batch read: `kept` datagrams in it, `late` over the target (dropped when read while
   * `dropping`, else among the kept).
   */
  observe(kept: number, late: number, nowMs: number): void {
    const full = kept + (this.dropping ? late : 0) === this.batchSize;
    // Still above target: a full batch with late datagrams, or, while dropping, nothing fresh read.
    if (late > 0 && (full || (this.dropping && kept === 0))) {
      if (this.aboveSince < 0) this.aboveSince = nowMs;
      else if (nowMs - this.aboveSince >= CODEL_INTERVAL_MS) this.dropping = true;
    } else {
      this.aboveSince = -1;
      this.dropping = false;
    }
  }
}
