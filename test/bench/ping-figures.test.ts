// How the benchmarks turn ping runs into figures: bench:e2e's p50 and p99 come from one run per
// setup and round, whichever of them are chosen, and a run without a reply is a failure, not NaN.
import { describe, expect, it } from "vitest";
import { perRound } from "../../bench/e2e/per-round.js";
import { roundTripFigures } from "../../src/bench/workloads.js";
import { pingResult } from "../../src/lab/traffic.js";

describe("bench:e2e perRound", () => {
  it("measures once per setup and round, also when only the p99 reader runs", async () => {
    const run = perRound<number>();
    let measured = 0;
    const measure = async () => ++measured;
    // `--workloads "ping p99"`: one reader per round, each round a run of its own.
    expect(await run("udp", 1, measure)).toBe(1);
    expect(await run("udp", 2, measure)).toBe(2);
    expect(await run("udp", 3, measure)).toBe(3);
    // Both readers in a round, two setups: one run each.
    expect(await run("udp", 4, measure)).toBe(4);
    expect(await run("vxlan", 4, measure)).toBe(5);
    expect(await run("udp", 4, measure)).toBe(4);
    expect(await run("vxlan", 4, measure)).toBe(5);
  });

  it("keeps no failed measurement: the next reader measures again", async () => {
    const run = perRound<string>();
    await expect(
      run("udp", 1, async () => {
        throw new Error("no result");
      }),
    ).rejects.toThrow("no result");
    expect(await run("udp", 1, async () => "second try")).toBe("second try");
  });
});

describe("roundTripFigures", () => {
  it("fails with BENCH_NO_TRAFFIC when no ping was answered", () => {
    expect(() => roundTripFigures({ sent: 200, received: 0, rtts: [], unreachable: 0 }, "udp")).toThrow(
      expect.objectContaining({ code: "BENCH_NO_TRAFFIC" }),
    );
  });

  it("gives the nearest-rank p50 and p99 and the loss", () => {
    const rtts = Array.from({ length: 99 }, (_, i) => i + 1);
    expect(roundTripFigures({ sent: 100, received: 99, rtts, unreachable: 0 }, "udp")).toEqual({
      p50: 50,
      p99: 99,
      lossPercent: 1,
    });
  });
});

describe("pingResult", () => {
  it("does not count a duplicated reply: 2 of 3 answered is 2 replies, not 3", () => {
    const out = [
      "PING 198.19.1.2 (198.19.1.2) 56(84) bytes of data.",
      "64 bytes from 198.19.1.2: icmp_seq=1 ttl=63 time=0.101 ms",
      "64 bytes from 198.19.1.2: icmp_seq=1 ttl=63 time=0.130 ms (DUP!)",
      "64 bytes from 198.19.1.2: icmp_seq=3 ttl=63 time=0.202 ms",
      "",
      "--- 198.19.1.2 ping statistics ---",
      "3 packets transmitted, 2 received, +1 duplicates, 33.3333% packet loss, time 402ms",
      "rtt min/avg/max/mdev = 0.101/0.144/0.202/0.042 ms",
    ].join("\n");
    const r = pingResult(out, 3);
    expect(r).toEqual({ sent: 3, received: 2, rtts: [0.101, 0.202], unreachable: 0 });
    expect(roundTripFigures(r, "udp").lossPercent).toBeCloseTo(100 / 3);
  });
});
