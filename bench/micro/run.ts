// `npm run bench:micro`: every hot-path microbenchmark, printed as it runs, and written as JSON
// when an output path is given (`npm run bench:micro -- out.json`).
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { lpmBenchmarks } from "./lpm.js";
import { lpm6Benchmarks } from "./lpm6.js";
import { offloadBenchmarks } from "./offload.js";
import { packetBenchmarks } from "./packets.js";

const results = [...lpmBenchmarks(), ...lpm6Benchmarks(), ...packetBenchmarks(), ...offloadBenchmarks()];
const out = process.argv[2];
if (out) {
  writeFileSync(out, JSON.stringify({ node: process.version, cpu: cpus()[0]?.model, results }, null, 2) + "\n");
  console.log(`results written to ${out}`);
}
