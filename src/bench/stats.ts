// The two order statistics every weft benchmark reports, written once (`weft bench`, bench:e2e,
// bench:io, bench:kernel, bench:gossip and the demo all use these):
// - median: of an even count, the mean of the two middle values (figures over rounds);
// - percentile: nearest rank, the smallest value with at least q of the values at or below it
//   (p50, p99 of ping times). A p99 is always an observed value, never interpolated;
// - pairedRatio: how an interleaved A/B is read, and shownPairedRatio: when a report shows one
//   (`weft bench` and bench:e2e alike).

/** The median; NaN for no values. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile (q in [0, 1]) of values in any order; NaN for no values. */
export function percentile(values: readonly number[], q: number): number {
  return percentileOfSorted(
    [...values].sort((a, b) => a - b),
    q,
  );
}

/** percentile of values already sorted ascending (several percentiles of many values, sorted once). */
export function percentileOfSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/**
 * Setup B against setup A in an interleaved run (A B A B: each round's two runs met the same
 * machine, so drift from round to round cancels in each round's ratio): the median of B / A over
 * the rounds where both ran (`a[i]`, `b[i]`: round i's values, undefined for a failed run; a
 * round whose A is not above 0 or whose B is not finite, such as a missing CPU figure, is skipped
 * too), and in how many of those B was lower. NaN and 0 rounds when no round has any.
 */
export function pairedRatio(
  a: ReadonlyArray<number | undefined>,
  b: ReadonlyArray<number | undefined>,
): { median: number; lower: number; rounds: number } {
  const ratios: number[] = [];
  let lower = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined || y === undefined || !(x > 0) || !Number.isFinite(y)) continue;
    ratios.push(y / x);
    if (y < x) lower++;
  }
  return { median: median(ratios), lower, rounds: ratios.length };
}

/**
 * pairedRatio as a report shows it (`weft bench`'s table and chart, bench:e2e's tables), or
 * undefined: none when fewer than half the rounds (`a.length`: the rounds the figure's workload
 * ran in) are paired, since the ratio of one round of three is that round's, not the run's; nor,
 * for a figure that may be 0 (loss, a flood tail), when A's median is 0: A's rounds skipped said
 * "none", and a ratio of the few above 0 would read as a multiple of what mostly was not there.
 */
export function shownPairedRatio(
  a: ReadonlyArray<number | undefined>,
  b: ReadonlyArray<number | undefined>,
  mayBeZero: boolean,
): ReturnType<typeof pairedRatio> | undefined {
  if (mayBeZero && !(median(a.filter((x) => x !== undefined)) > 0)) return undefined;
  const paired = pairedRatio(a, b);
  return paired.rounds > 0 && 2 * paired.rounds >= a.length ? paired : undefined;
}
