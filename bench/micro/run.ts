// `npm run bench:micro`: every hot-path microbenchmark, printed as it runs, and written as JSON
// when an output path is given (`npm run bench:micro -- [--max-time S] out.json`; `weft bench`
// runs it so, src/bench/micro.ts).
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { Command } from "commander";
import { numberValue } from "../cli-options.js";
import { lpmBenchmarks } from "./lpm.js";
import { lpm6Benchmarks } from "./lpm6.js";
import { offloadBenchmarks } from "./offload.js";
import { packetBenchmarks } from "./packets.js";

const program = new Command("bench:micro")
  .description("every hot-path microbenchmark (benchmark.js), printed as it runs")
  .argument("[out]", "also write the results as JSON to this file")
  .option("--max-time <s>", "benchmark.js's seconds per case (default: 2)", numberValue({ min: 0 }))
  .parse();
const { maxTime } = program.opts<{ maxTime?: number }>();
const results = [
  ...lpmBenchmarks(maxTime),
  ...lpm6Benchmarks(maxTime),
  ...packetBenchmarks(maxTime),
  ...offloadBenchmarks(maxTime),
];
const out = program.args[0] as string | undefined;
if (out) {
  writeFileSync(out, JSON.stringify({ node: process.version, cpu: cpus()[0]?.model, results }, null, 2) + "\n");
  console.log(`results written to ${out}`);
}
