// Flood tail's flood (probe.ts) is the flood itself: 1400 B datagrams as fast as its sender can,
// timestamped, so the tail is the age of its own datagrams still delivered after it stopped. On
// loopback in a namespace of the test's own, a token bucket (tbf) of 8 Mbit/s holding up to
// 150 kB keeps a standing queue of ~150 ms behind the flood (or what the sender's socket buffer
// lets it queue): what it still delivers after the
// stop is that old. On the same path without it, everything arrives and the figures come out.
import { describe, expect, it } from "vitest";
import { floodTailOf, PROBE_SCRIPT, type ProbeReceiver, type ProbeSender, runProbe } from "../../src/bench/load.js";
import { canUseNetns, Netns } from "../support/netns.js";

async function flood(ns: Netns, port: number) {
  const probe = (args: string[], limitMs: number) =>
    runProbe(ns.wrap([process.execPath, PROBE_SCRIPT, ...args]), limitMs);
  const receiver = probe(["recv", "127.0.0.1", String(port), "20"], 30_000);
  await receiver.listening;
  // Unpaced (0), 1400 B, at most 1 s or 20,000 datagrams.
  const sender = JSON.parse(
    await probe(["send", "127.0.0.1", String(port), "1", "0", "1400", "20000"], 20_000).output,
  ) as ProbeSender;
  await new Promise((r) => setTimeout(r, 500));
  receiver.stop();
  const r = JSON.parse(await receiver.output) as ProbeReceiver;
  const tail = floodTailOf(
    r.arrivals.map(([a, b]) => [BigInt(a), BigInt(b)] as const),
    BigInt(sender.lastSentNs),
  );
  return { sender, r, tail };
}

describe.skipIf(!canUseNetns())("flood tail's flood", () => {
  it("gives the age of its own datagrams a queue still delivers after it stopped", async () => {
    const ns = await Netns.create("tail");
    try {
      await ns.ip("link set lo up");
      await ns.exec([
        "tc",
        "qdisc",
        "add",
        "dev",
        "lo",
        "root",
        "tbf",
        "rate",
        "8mbit",
        "burst",
        "16kb",
        "limit",
        "150kb",
      ]);
      const { sender, r, tail } = await flood(ns, 7101);
      expect(sender.sent).toBeGreaterThan(0);
      // The bucket holds the sender back (its datagrams in the queue fill its socket's buffer) and
      // delivers what it holds late.
      expect(r.count).toBeGreaterThan(0);
      expect(tail.deliveredAfterStop).toBeGreaterThan(10);
      expect(tail.tailMs).toBeGreaterThan(50);
      expect(r.delayP99Ns / 1e6).toBeGreaterThan(50);
    } finally {
      await ns.destroy();
    }
  }, 30_000);

  it("stops at its count on an empty path, and the receiver gives its percentiles", async () => {
    const ns = await Netns.create("tail");
    try {
      await ns.ip("link set lo up");
      const { sender, r } = await flood(ns, 7102);
      expect(sender.sent).toBeLessThanOrEqual(20_000);
      expect(r.count).toBeGreaterThan(0);
      expect(r.delayP50Ns).toBeLessThanOrEqual(r.delayP99Ns);
    } finally {
      await ns.destroy();
    }
  }, 30_000);
});
