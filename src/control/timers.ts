// The timers one component owns (a memberlist, its prober, a lease layer), so that stopping it
// cancels every one of them.
import type { Clock, TimerHandle } from "./runtime.js";

export class Timers {
  private readonly live = new Set<TimerHandle>();

  constructor(private readonly clock: Clock) {}

  after(ms: number, fn: () => void): TimerHandle {
    const handle = this.clock.setTimer(ms, () => {
      this.live.delete(handle);
      fn();
    });
    this.live.add(handle);
    return handle;
  }

  cancel(handle: TimerHandle | undefined): void {
    if (!handle || !this.live.delete(handle)) return;
    this.clock.cancel(handle);
  }

  cancelAll(): void {
    for (const handle of this.live) this.clock.cancel(handle);
    this.live.clear();
  }
}
