// bench:e2e's ratio cells, by `weft bench`'s rules (src/bench/stats.ts shownPairedRatio): no ratio
// from fewer than half the rounds, none for a figure that may be 0 against a median of 0. The arrays:
// the two setups' values per round, undefined where a run failed.
import { shownPairedRatio } from "../../src/bench/stats.js";

type Rounds = ReadonlyArray<number | undefined>;

/** After a median, its ratio to kernel vxlan: " (0.52x)", " (0.52x 2/3)" over 2 rounds of 3, " (n/a)". */
export function ratioToKernel(kernel: Rounds, b: Rounds, mayBeZero: boolean): string {
  const p = shownPairedRatio(kernel, b, mayBeZero);
  if (!p) return " (n/a)";
  return ` (${p.median.toFixed(2)}x${p.rounds < kernel.length ? ` ${p.rounds}/${kernel.length}` : ""})`;
}

/** An A/B cell: B against A, and in how many of the paired rounds B was lower; "n/a" where no ratio is shown. */
export function abCell(a: Rounds, b: Rounds, mayBeZero: boolean): string {
  const p = shownPairedRatio(a, b, mayBeZero);
  return p ? `x${p.median.toFixed(2)}, lower ${p.lower}/${p.rounds}` : "n/a";
}
