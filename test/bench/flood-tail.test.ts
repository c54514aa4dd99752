// Flood tail's "oldest delivered after stop" counts what a queue still held when the probe sender
// stopped: on a path with no flood and no queue (loopback in a namespace of the test's own) that
// is nothing, so 0, though the final burst's own datagrams always arrive after its last send.
import { describe, expect, it } from "vitest";
import { PROBE_SCRIPT, type ProbeSender, probeTail, runProbe } from "../../src/bench/load.js";
import { canUseNetns, Netns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("flood tail's probe", () => {
  it("gives 0 for the tail on an empty path", async () => {
    const ns = await Netns.create("tail");
    try {
      await ns.ip("link set lo up");
      const probe = (args: string[], limitMs: number) =>
        runProbe(ns.wrap([process.execPath, PROBE_SCRIPT, ...args]), limitMs);
      const receiver = probe(["recv", "127.0.0.1", "7101", "20"], 30_000);
      await receiver.listening;
      // 100 a second, 10 ms apart: only the final datagram is sent at the stop (at 2,000 a second,
      // a busy machine's receiver can still be reading the burst before the final one).
      const sender = JSON.parse(await probe(["send", "127.0.0.1", "7101", "1", "100", "64"], 20_000).output);
      await new Promise((r) => setTimeout(r, 300));
      receiver.stop();
      const r = JSON.parse(await receiver.output) as { count: number; arrivals: Array<[string, string]> };
      expect(r.count).toBe((sender as ProbeSender).sent);
      const tail = probeTail(
        r.arrivals.map(([a, b]) => [BigInt(a), BigInt(b)] as const),
        sender as ProbeSender,
      );
      expect(tail).toEqual({ tailMs: 0, deliveredAfterStop: 0 });
    } finally {
      await ns.destroy();
    }
  }, 30_000);
});
