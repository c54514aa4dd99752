// Real time for the control plane: wall-clock aligned milliseconds that never go backwards
// within the process (timeOrigin + a monotonic offset), and setTimeout timers.
import type { Clock, TimerHandle } from "../runtime.js";

export class RealClock implements Clock {
  private nextId = 1;
  private readonly timers = new Map<number, NodeJS.Timeout>();

  now(): number {
    return performance.timeOrigin + performance.now();
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const id = this.nextId++;
    this.timers.set(
      id,
      setTimeout(() => {
        this.timers.delete(id);
        fn();
      }, ms),
    );
    return { id };
  }

  cancel(handle: TimerHandle): void {
    clearTimeout(this.timers.get(handle.id));
    this.timers.delete(handle.id);
  }
}

/** Math.random is enough for picking gossip targets; nothing secret depends on it. */
export const realRandom = { next: (): number => Math.random() };
