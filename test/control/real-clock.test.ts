// The agent's clock: timers longer than setTimeout's limit (2^31 - 1 ms, 24.8 days) must wait
// the whole time; Node would fire them at once (a reclaim grace set that long would reclaim at
// once, the very harm the 24 h default guards against).
import { afterEach, describe, expect, it, vi } from "vitest";
import { RealClock } from "../../src/control/transport/real-clock.js";

const DAY_MS = 24 * 3600_000;

describe("RealClock", () => {
  afterEach(() => vi.useRealTimers());

  it("fires a 30-day timer after 30 days, not before; cancel works across the steps", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const clock = new RealClock();
    let fired = 0;
    clock.setTimer(30 * DAY_MS, () => fired++);
    const cancelled = clock.setTimer(30 * DAY_MS, () => fired++);
    vi.advanceTimersByTime(26 * DAY_MS);
    clock.cancel(cancelled);
    vi.advanceTimersByTime(3 * DAY_MS);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(DAY_MS);
    expect(fired).toBe(1);
  });
});
