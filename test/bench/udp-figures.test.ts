// How a UDP iperf3 run becomes figures: received is what the server counted (sum_received), and
// loss is the share of the sent datagrams it did not receive, a lost tail included (iperf3 >= 3.11; before, flagged).
import { describe, expect, it } from "vitest";
import { udpFigures } from "../../src/bench/workloads.js";
import { type IperfJson, iperfTotals } from "../../src/lab/traffic.js";

/** iperf3 3.12's client JSON (`-u -J`, the fields read), 1,000 datagrams of 1400 B sent in 2 s. */
const udpJson = (received: { highestSeq: number; lost: number }): IperfJson => {
  const sum = (packets: number, lost: number, bytes: number) => ({
    bytes,
    seconds: 2,
    bits_per_second: (8 * bytes) / 2,
    retransmits: 0,
    lost_packets: lost,
    packets,
  });
  return {
    end: {
      sum_sent: sum(1000, 0, 1000 * 1400),
      // The server's packets are the highest sequence number it saw; lost, the gaps below it.
      sum_received: sum(received.highestSeq, received.lost, (received.highestSeq - received.lost) * 1400),
    },
  };
};

describe("UDP figures from iperf3", () => {
  it("counts a lost tail as lost: 800 of 1,000 received is 20% loss, not 10%", () => {
    // Datagrams 901..1000 never arrived (the tail), and 100 below 900 were lost too.
    const r = iperfTotals(udpJson({ highestSeq: 900, lost: 100 }), true);
    expect(r).toMatchObject({ packets: 1000, receivedPackets: 800, seconds: 2 });
    const f = udpFigures(r);
    expect(f.sentKpps).toBeCloseTo(0.5);
    expect(f.receivedKpps).toBeCloseTo(0.4);
    expect(f.lossPercent).toBeCloseTo(20);
  });

  it("gives no loss when all arrived", () => {
    expect(udpFigures(iperfTotals(udpJson({ highestSeq: 1000, lost: 0 }), true))).toEqual({
      sentKpps: 0.5,
      receivedKpps: 0.5,
      lossPercent: 0,
    });
  });

  it("reads iperf3 before 3.11 (only `sum`, as 3.9), and says a lost tail is not counted", () => {
    // iperf3 3.9's client JSON (`-u -J`): `sum` holds the datagrams sent and the gaps the server
    // counted below the highest sequence it saw, 1,000 sent with 100 gaps.
    const sum = { bytes: 1000 * 1400, seconds: 2, bits_per_second: (8 * 1000 * 1400) / 2 };
    const j = { end: { sum: { ...sum, retransmits: 0, jitter_ms: 0.01, lost_packets: 100, packets: 1000 } } };
    const r = iperfTotals(j, true);
    expect(r).toMatchObject({ packets: 1000, receivedPackets: 900, seconds: 2, lostTailUncounted: true });
    expect(r.receivedBytes).toBe(900 * 1400);
    expect(udpFigures(r).lossPercent).toBeCloseTo(10);
    // iperf3 >= 3.11 counts the tail, and says nothing.
    expect(iperfTotals(udpJson({ highestSeq: 1000, lost: 0 }), true).lostTailUncounted).toBeUndefined();
  });
});
