// bench:e2e's ratio cells follow `weft bench`'s two rules (src/bench/stats.ts shownPairedRatio):
// a ratio paired over fewer than half the rounds is not shown (it is that round's, not the run's),
// nor one of a figure that may be 0 (the flood tail, the dataplanes' CPU) against a median of 0.
import { describe, expect, it } from "vitest";
import { abCell, ratioToKernel } from "../../bench/e2e/ratio-cells.js";

describe("bench:e2e's ratios", () => {
  it("to kernel vxlan: paired by round, k/n when some rounds failed, none below half the rounds", () => {
    expect(ratioToKernel([10, 20, 40], [5, 12, 16], false)).toBe(" (0.50x)");
    // Round 3's udp run failed: over 2 rounds of 3, said.
    expect(ratioToKernel([10, 20, 40], [5, 12, undefined], false)).toBe(" (0.55x 2/3)");
    // Only round 1 of 3 paired: no ratio (0.50x would be that round's alone).
    expect(ratioToKernel([10, 20, 40], [5, undefined, undefined], false)).toBe(" (n/a)");
    expect(ratioToKernel([10, undefined, undefined], [5, 12, 16], false)).toBe(" (n/a)");
  });

  it("a figure that may be 0 has no ratio to a median of 0, other figures keep theirs", () => {
    // Kernel vxlan's flood tail was 0 in two of three rounds: no 30x from round 3 alone. (With one
    // value a round, a median of 0 leaves fewer than half the rounds paired: the first rule holds it too.)
    expect(ratioToKernel([0, 0, 0.2], [0.5, 0.4, 6], true)).toBe(" (n/a)");
    expect(ratioToKernel([0, 0.1, 0.2, 0.3], [0.5, 0.4, 0.6, 0.6], true)).toBe(" (3.00x 3/4)");
    expect(ratioToKernel([0, 0, 0, 0.2], [0.5, 0.4, 0.6, 0.6], false)).toBe(" (n/a)");
  });

  it("an A/B against the first userspace setup: by the same rules, lower counted over the paired rounds", () => {
    expect(abCell([10, 20, 40, 30], [11, 18, 36, undefined], false)).toBe("x0.90, lower 2/3");
    expect(abCell([10, 20, 40, 30], [11, undefined, undefined, undefined], false)).toBe("n/a");
    expect(abCell([0, 0, 0.3], [0.2, 0.1, 0.6], true)).toBe("n/a");
  });
});
