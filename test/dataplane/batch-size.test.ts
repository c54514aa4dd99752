// The time-bounded batch count (src/dataplane/batch-size.ts) against a reference model: a queue
// whose packets each cost a fixed time is read with the count the class gives, batch after batch.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BatchSize } from "../../src/dataplane/batch-size.js";

describe("BatchSize", () => {
  it("halves after a batch over budget, doubles after a full one under half of it, within 1..max", () => {
    const b = new BatchSize(16, 200);
    expect(b.count).toBe(16);
    b.observe(16, 900); // sixteen 64 KiB super-packets: far over
    expect(b.count).toBe(8);
    b.observe(8, 450);
    expect(b.count).toBe(4);
    b.observe(4, 225);
    expect(b.count).toBe(2);
    b.observe(2, 112); // within budget, but not under half of it: stays
    expect(b.count).toBe(2);
    b.observe(2, 60); // the flow turned to small packets: grows back
    expect(b.count).toBe(4);
    b.observe(3, 10); // a short batch (the queue ran dry) says nothing about a fuller one
    expect(b.count).toBe(4);
    b.observe(0, 5000); // an empty queue: nothing to learn
    expect(b.count).toBe(4);
    for (let i = 0; i < 10; i++) b.observe(b.count, 1);
    expect(b.count).toBe(16);
    for (let i = 0; i < 10; i++) b.observe(b.count, 1e6);
    expect(b.count).toBe(1);
  });

  it("with no budget always takes whole batches", () => {
    const b = new BatchSize(32, 0);
    b.observe(32, 1e6);
    expect(b.count).toBe(32);
  });

  it("settles where a batch of the queue's packets takes between half the budget and the budget", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 10, max: 2000 }),
        fc.double({ min: 0.5, max: 500, noNaN: true }),
        (max, budgetUs, perPacketUs) => {
          const b = new BatchSize(max, budgetUs);
          for (let i = 0; i < 20; i++) b.observe(b.count, b.count * perPacketUs);
          const took = b.count * perPacketUs;
          // Within budget, unless even one packet is over it; and never needlessly small: at least
          // half the budget, or the whole batch. (Halving from over the budget lands above half of
          // it and doubling from under half lands within it, so the count never swings.)
          expect(took <= budgetUs || b.count === 1).toBe(true);
          expect(b.count === max || 2 * took >= budgetUs).toBe(true);
          expect(b.count).toBeGreaterThanOrEqual(1);
          expect(b.count).toBeLessThanOrEqual(max);
        },
      ),
      { numRuns: 500 },
    );
  });
});
