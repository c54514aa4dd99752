// When the dataplane starts and stops dropping late datagrams at a socket's head (codel.ts),
// driven by a virtual clock.
import { describe, expect, it } from "vitest";
import { CODEL_INTERVAL_MS, CoDel } from "../../src/dataplane/codel.js";

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
    // And the interval starts over.
    c.observe(32, 1, 1000);
    c.observe(32, 1, 1000 + CODEL_INTERVAL_MS - 1);
    expect(c.dropping).toBe(false);
  });

  it("never drops for a late thread or a short burst: late datagrams in a short batch, or a full batch without late ones, reset it", () => {
    const c = new CoDel(32);
    for (let t = 0; t < 10 * CODEL_INTERVAL_MS; t += 10) {
      c.observe(t % 20 ? 5 : 32, t % 20 ? 5 : 0, t);
      expect(c.dropping).toBe(false);
    }
  });
});
