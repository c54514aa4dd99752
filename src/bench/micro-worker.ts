// Worker thread for src/bench/micro.ts: runs the hot-path microbenchmarks (bench/micro) and posts
// their results. A thread of its own keeps benchmark.js's console output off the progress bar and
// frees the 100k-prefix route tables (over 100 MiB) as soon as it ends.
import { parentPort, workerData } from "node:worker_threads";
import { lpmBenchmarks } from "../../bench/micro/lpm.js";
import { offloadBenchmarks } from "../../bench/micro/offload.js";
import { packetBenchmarks } from "../../bench/micro/packets.js";

const { maxTime } = workerData as { maxTime: number };
parentPort!.postMessage([...lpmBenchmarks(maxTime), ...packetBenchmarks(maxTime), ...offloadBenchmarks(maxTime)]);
