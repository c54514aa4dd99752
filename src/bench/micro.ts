// The hot-path microbenchmarks (bench/micro: LPM lookups, VXLAN encapsulation and
// decapsulation, each against the TypeScript reference; the offload paths) as part of `weft bench`, run in a worker
// thread (micro-worker.ts) whose printed lines report what runs now.
import { createInterface } from "node:readline";
import { Worker } from "node:worker_threads";
import type { MicroResult } from "../../bench/micro/suite.js";
import { WeftError } from "../errors.js";

export type { MicroResult };

/** Runs every microbenchmark with benchmark.js's `maxTime` (seconds per case); `onLine` gets each printed line. */
export function runMicro(maxTime: number, onLine: (line: string) => void): { done: Promise<MicroResult[]>; stop: () => Promise<void> } {
  const worker = new Worker(new URL("./micro-worker.js", import.meta.url), { workerData: { maxTime }, stdout: true });
  createInterface({ input: worker.stdout }).on("line", (line) => onLine(line.trim()));
  const done = new Promise<MicroResult[]>((resolve, reject) => {
    let results: MicroResult[] | undefined;
    worker.once("message", (m: MicroResult[]) => (results = m));
    worker.once("error", (e) => reject(new WeftError("BENCH_MICRO_FAILED", `microbenchmarks failed: ${e.message}`, { cause: e })));
    worker.once("exit", (code) => (results ? resolve(results) : reject(new WeftError("BENCH_MICRO_FAILED", `microbenchmark worker exited with ${code} before reporting`))));
  });
  return { done, stop: async () => void (await worker.terminate()) };
}
