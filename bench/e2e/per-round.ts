/**
 * One measurement per setup and round that several workloads read a figure of (ping's p50 and p99
 * come from one ping run): the first of them in a round measures, the others reuse it, whichever
 * of them were chosen. A failed measurement is not kept, so the next reader measures again.
 */
export function perRound<T>(): (setup: string, round: number, measure: () => Promise<T>) => Promise<T> {
  const done = new Map<string, T>();
  return async (setup, round, measure) => {
    const key = `${round} ${setup}`;
    if (!done.has(key)) done.set(key, await measure());
    return done.get(key)!;
  };
}
