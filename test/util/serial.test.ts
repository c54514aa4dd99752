import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SerialQueue } from "../../src/util/serial.js";

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("SerialQueue", () => {
  it("runs tasks one at a time, in the order queued, whatever each one waits for", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat({ max: 3 }), { minLength: 1, maxLength: 20 }), async (waits) => {
        const q = new SerialQueue();
        const log: string[] = [];
        let running = 0;
        const results = waits.map((w, i) =>
          q.run(async () => {
            running++;
            expect(running).toBe(1);
            log.push(`start ${i}`);
            for (let k = 0; k < w; k++) await tick();
            log.push(`end ${i}`);
            running--;
            return i;
          }),
        );
        expect(await Promise.all(results)).toEqual(waits.map((_, i) => i));
        expect(log).toEqual(waits.flatMap((_, i) => [`start ${i}`, `end ${i}`]));
      }),
      { numRuns: 50 },
    );
  });

  it("is busy from a task's queueing until every task queued has settled, failed ones included", async () => {
    const q = new SerialQueue();
    expect(q.busy).toBe(false);
    const first = q.run(async () => {
      await tick();
      throw new Error("first failed");
    });
    const second = q.run(() => tick());
    expect(q.busy).toBe(true);
    await first.catch(() => undefined);
    expect(q.busy).toBe(true);
    await second;
    await q.idle();
    expect(q.busy).toBe(false);
  });

  it("does not start a task in the call that queues it", async () => {
    const q = new SerialQueue();
    let started = false;
    const done = q.run(() => {
      started = true;
    });
    expect(started).toBe(false);
    await done;
    expect(started).toBe(true);
  });

  it("gives a failure to its own caller only; the tasks after it still run", async () => {
    const q = new SerialQueue();
    const ran: number[] = [];
    const first = q.run(async () => {
      ran.push(1);
      throw new Error("first failed");
    });
    const second = q.run(() => {
      ran.push(2);
      throw new Error("second failed synchronously");
    });
    const third = q.run(async () => {
      ran.push(3);
      return "ok";
    });
    await expect(first).rejects.toThrow("first failed");
    await expect(second).rejects.toThrow("second failed synchronously");
    await expect(third).resolves.toBe("ok");
    expect(ran).toEqual([1, 2, 3]);
  });

  it("idle() waits for every task queued so far, failed ones included, and never rejects", async () => {
    const q = new SerialQueue();
    const settled: string[] = [];
    q.run(async () => {
      await tick();
      settled.push("a");
      throw new Error("a failed");
    }).catch(() => undefined);
    void q.run(async () => {
      await tick();
      settled.push("b");
    });
    await q.idle();
    expect(settled).toEqual(["a", "b"]);
    await expect(new SerialQueue().idle()).resolves.toBeUndefined();
  });
});
