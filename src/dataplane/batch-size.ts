// How many packets a worker takes from one queue in one batch, bounded by time rather than count.
// With offloads one batch can be 16 TCP super-packets read (1 MiB) or 32 GRO receives written (2
// MiB), a millisecond or more of work, and every other queue of the worker — a ping's among them —
// waits for it: the worker serves its queues one batch each per round. Like NAPI's time budget
// (netdev_budget_usecs), a batch that took longer than the budget halves the next one's count for
// that queue, and one that took less than half of it doubles it, up to the batch's size; small
// packets keep whole batches, since many of them cost little. The clock is the caller's, so tests
// drive it.

export class BatchSize {
  /** Packets to take in the next batch. */
  count: number;

  /** `max`: the batch's size; `budgetUs`: the longest a batch should take (0: always `max`). */
  constructor(
    private readonly max: number,
    private readonly budgetUs: number,
  ) {
    this.count = max;
  }

  /** After a batch of `taken` packets (0: the queue was empty) that took `elapsedUs`. */
  observe(taken: number, elapsedUs: number): void {
    if (this.budgetUs <= 0 || taken === 0) return;
    if (elapsedUs > this.budgetUs) this.count = Math.max(1, this.count >> 1);
    else if (elapsedUs * 2 < this.budgetUs && taken === this.count) this.count = Math.min(this.max, this.count * 2);
  }
}
