// `npm run bench:micro`: every hot-path microbenchmark, printed as it runs, and written as JSON
// when an output path is given (`npm run bench:micro -- [--max-time S] out.json`; `weft bench`
// runs it so, src/bench/micro.ts). --max-time: benchmark.js's seconds per case (default 2).
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { lpmBenchmarks } from "./lpm.js";
import { lpm6Benchmarks } from "./lpm6.js";
import { offloadBenchmarks } from "./offload.js";
import { packetBenchmarks } from "./packets.js";

const { values, positionals } = parseArgs({ options: { "max-time": { type: "string" } }, allowPositionals: true });
const maxTime = values["max-time"] === undefined ? undefined : Number(values["max-time"]);
const results = [
  ...lpmBenchmarks(maxTime),
  ...lpm6Benchmarks(maxTime),
  ...packetBenchmarks(maxTime),
  ...offloadBenchmarks(maxTime),
];
const out = positionals[0];
if (out) {
  writeFileSync(out, JSON.stringify({ node: process.version, cpu: cpus()[0]?.model, results }, null, 2) + "\n");
  console.log(`results written to ${out}`);
}
