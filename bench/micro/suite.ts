// Runs a group of microbenchmarks with benchmark.js and reports each as units per second
// (packets/s, lookups/s), since one call handles a whole batch.
import Benchmark from "benchmark";
import { formatRate, type MicroResult } from "../../src/bench/micro.js";

export type { MicroResult };

export interface MicroCase {
  name: string;
  /** One call: usually a whole batch. */
  fn: () => void;
  /** Units (packets, lookups) one call handles. */
  perCall: number;
  unit: string;
}

export function runMicroSuite(suite: string, cases: MicroCase[], opts: { maxTime?: number } = {}): MicroResult[] {
  const s = new Benchmark.Suite(suite);
  for (const c of cases) s.add(c.name, c.fn, { maxTime: opts.maxTime ?? 2, minSamples: 10 });
  const results: MicroResult[] = [];
  s.on("cycle", (ev: Benchmark.Event) => {
    const b = ev.target as unknown as Benchmark;
    const c = cases.find((x) => x.name === b.name)!;
    const r: MicroResult = {
      suite,
      name: c.name,
      rate: (b.hz ?? 0) * c.perCall,
      unit: c.unit,
      rme: b.stats?.rme ?? 0,
      samples: b.stats?.sample.length ?? 0,
    };
    results.push(r);
    console.log(`  ${c.name.padEnd(56)} ${formatRate(r.rate).padStart(10)} ${c.unit}/s  ±${r.rme.toFixed(1)}%`);
  });
  console.log(suite);
  s.run({ async: false });
  return results;
}
