// When the dataplane starts and stops dropping late datagrams at a socket's head (codel.ts), driven
// by a virtual clock: against a reference that decides from the whole history, and on a simulated
// receive queue under a flood that never backs off.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CODEL_INTERVAL_MS, CODEL_MEMORY_MS, CoDel } from "../../src/dataplane/codel.js";
import { referenceDropping, SimulatedReceiveQueue, type QueueRead } from "../reference/codel.js";

describe("CoDel on a receive queue", () => {
  it("drops only after the queue stood above target for a whole interval, and stops once the head is fresh", () => {
    const c = new CoDel(32);
    c.observe(32, 5, 0); // a full batch with late datagrams: the queue stands
    expect(c.dropping).toBe(false);
    c.observe(32, 32, CODEL_INTERVAL_MS - 1);
    expect(c.dropping).toBe(false);
    c.observe(32, 32, CODEL_INTERVAL_MS);
    expect(c.dropping).toBe(true);
    // While dropping, late datagrams are gone from `kept`: a full batch of them, then a short batch
    // with nothing fresh, keep it dropping.
    c.observe(0, 32, CODEL_INTERVAL_MS + 1);
    c.observe(0, 3, CODEL_INTERVAL_MS + 2);
    expect(c.dropping).toBe(true);
    // A batch that reaches fresh datagrams ends it.
    c.observe(10, 3, CODEL_INTERVAL_MS + 3);
    expect(c.dropping).toBe(false);
  });

  it("resumes dropping at once when the queue stands again soon after, and waits a whole interval again later", () => {
    const c = new CoDel(32);
    c.observe(32, 1, 0);
    c.observe(32, 1, CODEL_INTERVAL_MS);
    expect(c.dropping).toBe(true);
    c.observe(32, 0, CODEL_INTERVAL_MS + 1); // fresh head: the dropping state ends
    expect(c.dropping).toBe(false);
    c.observe(32, 1, CODEL_INTERVAL_MS + 5); // the flood stands again: the same overload
    expect(c.dropping).toBe(true);
    c.observe(5, 0, CODEL_INTERVAL_MS + 6);
    const later = CODEL_INTERVAL_MS + 6 + CODEL_MEMORY_MS;
    c.observe(32, 1, later); // long after: a new standing queue waits its interval
    expect(c.dropping).toBe(false);
    c.observe(32, 1, later + CODEL_INTERVAL_MS - 1);
    expect(c.dropping).toBe(false);
    c.observe(32, 1, later + CODEL_INTERVAL_MS);
    expect(c.dropping).toBe(true);
  });

  it("never drops for a late thread or a short burst: late datagrams in a short batch, or a full batch without late ones, reset it", () => {
    const c = new CoDel(32);
    for (let t = 0; t < 10 * CODEL_INTERVAL_MS; t += 10) {
      c.observe(t % 20 ? 5 : 32, t % 20 ? 5 : 0, t);
      expect(c.dropping).toBe(false);
    }
  });

  it("decides as the history-wide reference does, read after read", () => {
    const batch = 16;
    const read = fc
      .record({ kept: fc.nat({ max: batch }), late: fc.nat({ max: batch }), dt: fc.nat({ max: 60 }) })
      .map((r) => ({ ...r, late: Math.min(r.late, batch - r.kept) }));
    fc.assert(
      fc.property(fc.array(read, { maxLength: 300 }), (steps) => {
        let at = 0;
        const reads: QueueRead[] = steps.map((s) => ({ kept: s.kept, late: s.late, at: (at += s.dt) }));
        const expected = referenceDropping(reads, batch, CODEL_INTERVAL_MS, CODEL_MEMORY_MS);
        const c = new CoDel(batch);
        reads.forEach((r, i) => {
          c.observe(r.kept, r.late, r.at);
          expect(c.dropping, `read ${i}`).toBe(expected[i]);
        });
      }),
      { numRuns: 300 },
    );
  });

  it("under a flood that never backs off, keeps no datagram much older than the target once it has dropped", () => {
    const target = 5;
    const batch = 64;
    fc.assert(
      fc.property(
        fc.record({
          // What the reader forwards per ms, arrivals per ms above it, and the buffer's room.
          serves: fc.integer({ min: 1, max: 4 }).map((k) => k * batch),
          excess: fc.integer({ min: 1, max: 200 }),
          capacity: fc.integer({ min: 2_000, max: 20_000 }),
        }),
        ({ serves, excess, capacity }) => {
          const q = new SimulatedReceiveQueue(capacity);
          const c = new CoDel(batch);
          let dropped = false;
          let oldest = 0;
          for (let now = 0; now < 3_000; now++) {
            q.arrive(now, serves + excess);
            // As the worker does: batch after batch while they come back full, within what it can
            // forward; a dropped datagram costs it an eighth of a forwarded one (no hot path, no write).
            for (let budget = serves; budget > 0; ) {
              const drop = c.dropping;
              const { ages, late } = q.read(now, batch, target, drop);
              c.observe(ages.length, late, now);
              budget -= ages.length + (drop ? late / 8 : 0);
              dropped ||= drop && late > 0;
              if (dropped && ages.length > 0) oldest = Math.max(oldest, ...ages);
              if (ages.length + (drop ? late : 0) < batch) break;
            }
          }
          expect(dropped).toBe(true);
          expect(q.headDrops).toBeGreaterThan(0);
          // The read that finds the queue standing again keeps its late datagrams; the next drops.
          expect(oldest).toBeLessThanOrEqual(target + 1);
        },
      ),
      { numRuns: 100 },
    );
  });
});
