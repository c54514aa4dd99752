// Blocking waits belong to worker threads: these tests block one and wake it from the main thread.
import { describe, expect, it } from "vitest";
import { on } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import { WORKER_MAX_PAIRS } from "../../src/dataplane/defaults.js";
import { addonPath, native } from "../../src/io/native.js";
import { WAIT_MAX_FDS, WAIT_SLEPT, WAIT_SPUN, WAIT_WOKEN, Waker, waitReadable } from "../../src/io/wait.js";

interface WaitResult {
  mask: number;
  /** process.hrtime.bigint() when the wait began and ended (one clock for all threads). */
  start: bigint;
  end: bigint;
}

/** Starts a worker blocked in wait(fds, wakeFd, timeoutMs); resolves when it is about to block. */
async function blockedWorker(
  fds: number[],
  wakeFd: number,
  timeoutMs: number,
  spinUs = 0,
): Promise<{ result: Promise<WaitResult> }> {
  const worker = new Worker(
    `const { parentPort, workerData: w } = require("node:worker_threads");
     const io = require(w.addonPath);
     parentPort.postMessage("waiting");
     const start = process.hrtime.bigint();
     const mask = io.wait(w.fds, w.wakeFd, w.timeoutMs, w.spinUs);
     parentPort.postMessage({ mask, start, end: process.hrtime.bigint() });`,
    { eval: true, workerData: { addonPath, fds, wakeFd, timeoutMs, spinUs } },
  );
  // Buffers messages, and rejects on the worker's 'error' event.
  const messages = on(worker, "message");
  const next = async () => ((await messages.next()).value as unknown[])[0];
  expect(await next()).toBe("waiting");
  return { result: next().finally(() => worker.terminate()) as Promise<WaitResult> };
}

describe("waiting for I/O", () => {
  it("reports each of its most fds as a bit of its own, apart from the flag bits, and refuses one more", () => {
    const fds = Array.from({ length: WAIT_MAX_FDS + 1 }, () => Waker.open());
    try {
      for (const w of fds) w.signal();
      const all = fds.slice(0, WAIT_MAX_FDS).map((w) => w.fd);
      const mask = waitReadable(all, -1, 0);
      expect(mask).toBe(2 ** WAIT_MAX_FDS - 1);
      expect(mask & (WAIT_WOKEN | WAIT_SPUN | WAIT_SLEPT)).toBe(0);
      expect(() => waitReadable([...all, fds[WAIT_MAX_FDS].fd], -1, 0)).toThrow(/at most/);
      // A dataplane worker watches two fds per queue pair.
      expect(2 * WORKER_MAX_PAIRS).toBeLessThanOrEqual(WAIT_MAX_FDS);
    } finally {
      for (const w of fds) w.close();
    }
  });

  it("a waker signalled from another thread ends a blocked wait", async () => {
    const waker = Waker.open();
    const idle = Waker.open(); // stands in for a TUN or UDP fd with nothing to read
    try {
      const { result } = await blockedWorker([idle.fd], waker.fd, 10_000);
      await sleep(200); // let the worker sit in poll()
      const signalled = process.hrtime.bigint();
      waker.signal();
      const { mask, start, end } = await result;
      expect(mask).toBe(WAIT_WOKEN);
      expect(Number(signalled - start) / 1e6).toBeGreaterThan(150); // it really blocked
      // Ended by the signal, long before the wait's own 10-s timeout would have.
      expect(Number(end - start) / 1e6).toBeLessThan(5000);
      // The signal stays until drained, so a stop request is not lost between waits.
      expect(waitReadable([], waker.fd, 0)).toBe(WAIT_WOKEN);
      expect(waker.drain()).toBe(1);
      expect(waitReadable([], waker.fd, 0)).toBe(0);
    } finally {
      waker.close();
      idle.close();
    }
  });

  it("busy-polls for spinUs, then sleeps: a signal is seen either way", async () => {
    const waker = Waker.open();
    const idle = Waker.open();
    try {
      // Signalled while still spinning (a 1-s budget, the most: WAIT_SPUN, caught by spinning), and
      // after a short budget ran out (asleep: WAIT_SLEPT).
      for (const [spinUs, how] of [
        [1_000_000, WAIT_SPUN],
        [1000, WAIT_SLEPT],
      ]) {
        const { result } = await blockedWorker([idle.fd], waker.fd, 10_000, spinUs);
        await sleep(200);
        waker.signal();
        expect((await result).mask).toBe(WAIT_WOKEN | how);
        expect(waker.drain()).toBe(1);
      }
      // Ready at the first look: neither caught by spinning nor asleep.
      waker.signal();
      const ready = await blockedWorker([idle.fd], waker.fd, 10_000, 1000);
      expect((await ready.result).mask).toBe(WAIT_WOKEN);
      expect(waker.drain()).toBe(1);
      // A budget with nothing to see ends in the timeout, like a plain wait.
      const { result } = await blockedWorker([idle.fd], waker.fd, 50, 1000);
      expect((await result).mask).toBe(WAIT_SLEPT);
      // Spinning blocks too, so the main thread may not.
      expect(() => waitReadable([idle.fd], waker.fd, 0, 100)).toThrow(
        expect.objectContaining({ code: "IO_WAIT_ON_MAIN_THREAD" }),
      );
    } finally {
      waker.close();
      idle.close();
    }
  });

  it("reports which fd became readable, and times out with 0", async () => {
    const waker = Waker.open();
    const fds = [Waker.open(), Waker.open(), Waker.open()];
    try {
      const { result } = await blockedWorker(
        fds.map((f) => f.fd),
        waker.fd,
        10_000,
      );
      fds[2].signal();
      expect((await result).mask).toBe(0b100);

      const timeout = await (
        await blockedWorker(
          fds.slice(0, 2).map((f) => f.fd),
          waker.fd,
          100,
        )
      ).result;
      expect(timeout.mask).toBe(0);
      expect(Number(timeout.end - timeout.start) / 1e6).toBeGreaterThanOrEqual(99);
    } finally {
      waker.close();
      for (const f of fds) f.close();
    }
  });

  it("refuses to block the main thread, and reports fds that are not open", () => {
    const waker = Waker.open();
    expect(() => waitReadable([], waker.fd, 10)).toThrow(expect.objectContaining({ code: "IO_WAIT_ON_MAIN_THREAD" }));
    const fd = waker.fd;
    waker.close();
    waker.close();
    expect(() => waitReadable([fd], -1, 0)).toThrow(expect.objectContaining({ code: "EBADF", syscall: "poll" }));
    expect(() => waker.signal()).toThrow(expect.objectContaining({ code: "IO_CLOSED" }));
    expect(() => waitReadable(new Array(31).fill(0), -1, 0)).toThrow(RangeError);
    expect(() => waitReadable([Number.NaN], -1, 0)).toThrow(TypeError);
    expect(() => native.wait([0], -1, 1.5)).toThrow(TypeError);
  });
});
