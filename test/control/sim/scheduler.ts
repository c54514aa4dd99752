// Virtual time for the simulator: one ordered event queue (time, then insertion order) that the
// harness runs forward. Nothing waits for real time. Between events that advance the clock the
// loop yields one macrotask, so that promise continuations of the code under test (join,
// push-pull) run at the virtual instant they belong to. Checks registered with addCheck run
// after every event; the first that throws stops the run.

export interface ScheduledEvent {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Virtual epoch: wall-clock-like milliseconds (incarnations are derived from them). */
export const SIM_EPOCH_MS = 1_750_000_000_000;

export class Scheduler {
  private heap: ScheduledEvent[] = [];
  private seq = 0;
  private nowMs = SIM_EPOCH_MS;
  private readonly checks: (() => void)[] = [];
  eventsRun = 0;

  now(): number {
    return this.nowMs;
  }

  /** Milliseconds of virtual time since the epoch. */
  elapsed(): number {
    return this.nowMs - SIM_EPOCH_MS;
  }

  schedule(delayMs: number, fn: () => void): ScheduledEvent {
    const ev: ScheduledEvent = { at: this.nowMs + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.push(ev);
    return ev;
  }

  addCheck(check: () => void): void {
    this.checks.push(check);
  }

  async runFor(ms: number): Promise<void> {
    await this.runUntil(this.nowMs + ms);
  }

  async runUntil(t: number): Promise<void> {
    let ranSinceYield = false;
    for (;;) {
      const ev = this.heap[0];
      if (!ev || ev.at > t) break;
      if (ev.at > this.nowMs && ranSinceYield) {
        await yieldMacrotask();
        this.runChecks();
        ranSinceYield = false;
        continue;
      }
      this.pop();
      if (ev.cancelled) continue;
      this.nowMs = ev.at;
      ev.fn();
      this.eventsRun++;
      ranSinceYield = true;
      this.runChecks();
    }
    this.nowMs = Math.max(this.nowMs, t);
    await yieldMacrotask();
    this.runChecks();
  }

  /** Runs until pred() holds (tested every stepMs) or maxMs passed; true if it held. */
  async runUntilTrue(pred: () => boolean, maxMs: number, stepMs = 100): Promise<boolean> {
    const end = this.nowMs + maxMs;
    while (!pred()) {
      if (this.nowMs >= end) return false;
      await this.runUntil(Math.min(end, this.nowMs + stepMs));
    }
    return true;
  }

  private runChecks(): void {
    for (const check of this.checks) check();
  }

  private push(ev: ScheduledEvent): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  private pop(): ScheduledEvent {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l], h[m])) m = l;
        if (r < h.length && before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(a: ScheduledEvent, b: ScheduledEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

function yieldMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
