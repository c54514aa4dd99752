// The sums that carry a stopped dataplane's counters into the next one's: addTotals, the lane's
// saved sum, which must keep what every stopped instance counted, and withTotals, the running
// instance's view, which shows its own peers only. Before, the saved sum was built by withTotals:
// an instance stopped without peers (a failed start) or without TUN stats wiped them from it.
import { describe, expect, it } from "vitest";
import {
  addTotals,
  addTotalsSince,
  type DataplaneTotals,
  totalsSince,
  withTotals,
} from "../../src/dataplane/dataplane.js";
import { IO_COUNTER } from "../../src/dataplane/queue-task.js";

/** Totals whose every counter is `n`, for the named peers, with TUN ring drops `drops` if given. */
function totals(n: bigint, peers: string[], drops?: bigint): DataplaneTotals {
  const dir = () => ({ packets: { FORWARD: n }, bytesForwarded: n, offloadSegments: n, checksumTrusted: n });
  const peer = () => ({ txPackets: n, txBytes: n, rxPackets: n, rxBytes: n });
  return {
    tx: dir(),
    rx: dir(),
    peers: Object.fromEntries(peers.map((name) => [name, peer()])),
    io: Object.fromEntries(Object.keys(IO_COUNTER).map((k) => [k, n])) as DataplaneTotals["io"],
    ...(drops !== undefined && { tunRingDrops: drops }),
    workerRestarts: Number(n),
  };
}

describe("addTotals", () => {
  it("keeps every peer's count and the TUN ring drops of an instance stopped without them", () => {
    const base = totals(5n, ["a", "b"], 7n);
    // A failed start's instance: its stop cleared its peers and closed its device's stats.
    expect(addTotals(base, totals(1n, []))).toEqual({ ...totals(6n, [], 7n), peers: totals(5n, ["a", "b"]).peers });
  });

  it("adds an instance with some of the peers (a peer sync failed halfway) and keeps the rest", () => {
    const sum = addTotals(totals(5n, ["a", "b"], 7n), totals(1n, ["b", "c"], 2n));
    expect(sum.peers).toEqual({ ...totals(5n, ["a"]).peers, ...totals(6n, ["b"]).peers, ...totals(1n, ["c"]).peers });
    expect(sum.tunRingDrops).toBe(9n);
    expect(sum.tx).toEqual(totals(6n, []).tx);
    expect(sum.io).toEqual(totals(6n, []).io);
    expect(sum.workerRestarts).toBe(6);
  });

  it("starts from the first instance, and says nothing of TUN ring drops none of them could read", () => {
    const first = addTotals(undefined, totals(3n, ["a"]));
    expect(first).toEqual(totals(3n, ["a"]));
    expect(addTotals(first, totals(1n, ["a"]))).not.toHaveProperty("tunRingDrops");
    expect(addTotals(first, totals(1n, [], 4n)).tunRingDrops).toBe(4n);
  });

  it("returns only the totals, not the rest of a dataplane's counters", () => {
    const d = { ...totals(1n, ["a"], 1n), perQueue: [{ tx: 1n, rx: 1n }], lastErrno: [{}], workersDown: 1 };
    expect(Object.keys(addTotals(totals(1n, []), d)).sort()).toEqual(Object.keys(totals(1n, [], 1n)).sort());
  });
});

describe("withTotals", () => {
  it("shows the running instance's peers only, each with its saved count", () => {
    const shown = withTotals(totals(1n, ["b", "c"], 2n), totals(5n, ["a", "b"], 7n));
    expect(shown.peers).toEqual({ ...totals(6n, ["b"]).peers, ...totals(1n, ["c"]).peers });
    expect(shown.tunRingDrops).toBe(9n);
    expect(shown.tx).toEqual(totals(6n, []).tx);
  });

  it("shows no TUN ring drops while the running instance cannot read its device's", () => {
    expect(withTotals(totals(1n, []), totals(5n, [], 7n))).not.toHaveProperty("tunRingDrops");
    expect(withTotals(totals(1n, ["a"], 2n), undefined)).toEqual(totals(1n, ["a"], 2n));
  });
});

describe("totalsSince", () => {
  it("is what one instance counted between two reads, added to the saved sum as a whole", () => {
    const before = totals(5n, ["a", "b"], 7n);
    const since = totalsSince(totals(8n, ["a", "b"], 9n), before);
    expect(since).toEqual({ ...totals(3n, ["a", "b"]), tunRingDrops: 2n });
    expect(addTotals(addTotals(undefined, before), since)).toEqual(totals(8n, ["a", "b"], 9n));
  });

  it("adds no TUN ring drops nor peers the later read lacks", () => {
    const since = totalsSince(totals(6n, []), totals(5n, ["a"], 7n));
    expect(since).not.toHaveProperty("tunRingDrops");
    expect(addTotals(totals(5n, ["a"], 7n), since)).toEqual({ ...totals(6n, [], 7n), peers: totals(5n, ["a"]).peers });
  });
});

describe("addTotalsSince", () => {
  it("adds what an instance counted while it stopped, but not for a peer forgotten meanwhile (it left)", () => {
    const before = totals(5n, ["a", "gone"]);
    const base = addTotals(undefined, before);
    // A peer sync during the stop dropped the peer that left (keepPeerTotals); a new one came.
    delete base.peers?.gone;
    const sum = addTotalsSince(base, totals(8n, ["a", "gone", "new"]), before);
    expect(sum.peers).toEqual({ ...totals(8n, ["a"]).peers, ...totals(8n, ["new"]).peers });
    expect(sum.tx).toEqual(totals(8n, []).tx);
  });
});
