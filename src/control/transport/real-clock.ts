// Real time for the control plane: wall-clock aligned milliseconds that never go backwards
// within the process (timeOrigin + a monotonic offset), and setTimeout timers.
import type { Clock, TimerHandle } from "../runtime.js";

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export class RealClock implements Clock {
  private nextId = 1;
  private readonly timers = new Map<number, NodeJS.Timeout>();

  now(): number {
    return performance.timeOrigin + performance.now();
  }

  wallNow(): number {
    return Date.now();
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const id = this.nextId++;
    this.arm(id, performance.now() + ms, fn);
    return { id };
  }

  /** setTimeout fires at once for delays above 2^31 - 1 ms (24.8 days): wait in steps. */
  private arm(id: number, due: number, fn: () => void): void {
    const left = Math.max(0, due - performance.now());
    this.timers.set(
      id,
      setTimeout(
        () => {
          if (left > MAX_TIMEOUT_MS) return this.arm(id, due, fn);
          this.timers.delete(id);
          fn();
        },
        Math.min(left, MAX_TIMEOUT_MS),
      ),
    );
  }

  cancel(handle: TimerHandle): void {
    clearTimeout(this.timers.get(handle.id));
    this.timers.delete(handle.id);
  }
}

/** From the system's CSPRNG: a node's first probe sequence number is drawn here, and acks captured
 *  from its earlier runs must not be able to match it. */
const word = new Uint32Array(1);
export const realRandom = { next: (): number => crypto.getRandomValues(word)[0] / 0x1_0000_0000 };
