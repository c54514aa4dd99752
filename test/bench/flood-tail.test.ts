// Flood tail's flood (probe.ts) is the flood itself: 1400 B datagrams as fast as its sender can,
// timestamped, so the tail is the age of its own datagrams still delivered after it stopped. On
// loopback in a namespace of the test's own, a token bucket (tbf) of 8 Mbit/s holding up to
// 150 kB keeps a standing queue of ~150 ms behind the flood (or what the sender's socket buffer
// lets it queue): what it still delivers after the stop is that old. On the same path without
// it, every datagram sent is received or dropped at the receiving socket (counted), and the tail
// is at least the last datagram's own delay.
import { describe, expect, it } from "vitest";
import { floodTailOf, PROBE_SCRIPT, type ProbeReceiver, type ProbeSender, runProbe } from "../../src/bench/load.js";
import { udpStats } from "../../src/lab/traffic.js";
import { canUseNetns, Netns } from "../support/netns.js";

const COUNT = 20_000;

/** `drainMs`: how long after the sender's end the receiver is asked to stop. */
async function flood(ns: Netns, port: number, drainMs: number) {
  const probe = (args: string[], limitMs: number) =>
    runProbe(ns.wrap([process.execPath, PROBE_SCRIPT, ...args]), limitMs);
  const receiver = probe(["recv", "127.0.0.1", String(port), "20", String(COUNT)], 30_000);
  await receiver.listening;
  const dropsBefore = (await udpStats(ns)).rcvbufErrors;
  // Unpaced (0), 1400 B, at most 1 s or COUNT datagrams.
  const sender = JSON.parse(
    await probe(["send", "127.0.0.1", String(port), "1", "0", "1400", String(COUNT)], 20_000).output,
  ) as ProbeSender;
  await new Promise((r) => setTimeout(r, drainMs));
  receiver.stop();
  const r = JSON.parse(await receiver.output) as ProbeReceiver;
  const receiverDrops = (await udpStats(ns)).rcvbufErrors - dropsBefore;
  const arrivals = r.arrivals.map(([a, b]) => [BigInt(a), BigInt(b)] as const);
  const tail = floodTailOf(arrivals, BigInt(sender.lastSentNs));
  return { sender, r, arrivals, receiverDrops, tail };
}

/** tbf on the namespace's loopback; without tc or sch_tbf a skip outside CI, a failure in it. */
async function addTbf(ns: Netns, rate: string, skip: (note: string) => never): Promise<void> {
  try {
    await ns.exec(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "16kb", "limit", "150kb"]);
  } catch (e) {
    const why = `this test needs tc (iproute2) and the sch_tbf qdisc: ${(e as Error).message}`;
    if (process.env.CI === "true") throw new Error(`${why}; CI=true forbids skipping it`);
    skip(why);
  }
}

describe.skipIf(!canUseNetns())("flood tail's flood", () => {
  it("gives the age of its own datagrams a queue still delivers after it stopped", async (ctx) => {
    const ns = await Netns.create("tail");
    try {
      await ns.ip("link set lo up");
      await addTbf(ns, "8mbit", (note) => ctx.skip(note) as never);
      // Asked to stop as soon as the sender is done: the receiver still waits for the queue.
      const { sender, r, tail } = await flood(ns, 7101, 0);
      expect(sender.sent).toBeGreaterThan(0);
      // The bucket holds the sender back (its datagrams in the queue fill its socket's buffer) and
      // delivers what it holds late.
      expect(r.count).toBeGreaterThan(0);
      expect(r.cutOff).toBe(false);
      // The sender's socket buffer (~90 datagrams of 1400 B in flight) or the bucket's 150 kB
      // (~100) bound the queue: most of it is still delivered after the stop, none cut off.
      expect(tail.deliveredAfterStop).toBeGreaterThan(50);
      expect(tail.tailMs).toBeGreaterThan(50);
      expect(r.delayP99Ns / 1e6).toBeGreaterThan(50);
    } finally {
      await ns.destroy();
    }
  }, 30_000);

  it("says a tail still arriving when it stopped waiting was cut off", async (ctx) => {
    const ns = await Netns.create("tail");
    try {
      await ns.ip("link set lo up");
      // 100 kbit/s: the ~90 datagrams queued at the flood's end take ~10 s, longer than the
      // receiver's bounded wait.
      await addTbf(ns, "100kbit", (note) => ctx.skip(note) as never);
      const { r } = await flood(ns, 7103, 0);
      expect(r.count).toBeGreaterThan(0);
      expect(r.cutOff).toBe(true);
    } finally {
      await ns.destroy();
    }
  }, 30_000);

  it("on an empty path, receives what was sent or counts it dropped, and its tail is its last datagram's", async () => {
    const ns = await Netns.create("tail");
    try {
      await ns.ip("link set lo up");
      const { sender, r, arrivals, receiverDrops, tail } = await flood(ns, 7102, 500);
      expect(sender.failed).toBe(0);
      expect(sender.sent).toBeGreaterThan(0);
      expect(BigInt(sender.lastSentNs)).toBeGreaterThanOrEqual(BigInt(sender.startNs));
      // Nothing is lost on loopback but at the receiving socket, whose drops the kernel counts.
      expect(r.count + receiverDrops).toBe(sender.sent);
      expect(r.cutOff).toBe(false);
      expect(r.delayP50Ns).toBeLessThanOrEqual(r.delayP99Ns);
      // The last datagram, unless the socket dropped it, arrived after its own send: in the tail.
      const last = arrivals.find(([sent]) => sent === BigInt(sender.lastSentNs));
      expect(last !== undefined || receiverDrops > 0, "the last datagram arrived or a drop was counted").toBe(true);
      if (last) {
        expect(tail.deliveredAfterStop).toBeGreaterThanOrEqual(1);
        expect(tail.tailMs).toBeGreaterThanOrEqual(Number(last[1] - last[0]) / 1e6);
      }
      expect(tail.tailMs).toBeGreaterThanOrEqual(0);
    } finally {
      await ns.destroy();
    }
  }, 30_000);
});
