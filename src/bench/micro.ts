// The hot-path microbenchmarks (bench/micro: LPM lookups, VXLAN encapsulation and decapsulation,
// each against the TypeScript reference; the offload paths) as part of `weft bench`: it runs
// `npm run bench:micro` as a child process, whose printed lines report what runs now and whose
// JSON goes into the report. A process, not an import: those benchmarks measure against the
// references in test/, which shipped code must not import, and bench/ builds on src/bench, never
// the reverse. A process of its own also keeps benchmark.js's output off the progress bar and
// frees the 100k-prefix route tables (over 100 MiB) as soon as it ends. The package ships it and the
// references it imports (package.json's `files`), so an installed `weft bench` runs it too.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { WeftError } from "../errors.js";
import { makeTempDir, removeTempDir } from "../lab/temp-dirs.js";
import { projectFile } from "../paths.js";

export interface MicroResult {
  suite: string;
  name: string;
  /** Units per second (calls/s x perCall). */
  rate: number;
  unit: string;
  /** Relative margin of error, percent. */
  rme: number;
  samples: number;
}

/** A rate with an SI prefix: "1.25 M". */
export function formatRate(rate: number): string {
  if (rate >= 1e9) return `${(rate / 1e9).toFixed(2)} G`;
  if (rate >= 1e6) return `${(rate / 1e6).toFixed(2)} M`;
  if (rate >= 1e3) return `${(rate / 1e3).toFixed(1)} k`;
  return rate.toFixed(0);
}

/** Where `npm run build` puts bench:micro. */
const MICRO_SCRIPT = projectFile("dist", "bench", "micro", "run.js");

/** Runs every microbenchmark with benchmark.js's `maxTime` (seconds per case); `onLine` gets each printed line. */
export function runMicro(
  maxTime: number,
  onLine: (line: string) => void,
): { done: Promise<MicroResult[]>; stop: () => Promise<void> } {
  if (!existsSync(MICRO_SCRIPT)) {
    const error = new WeftError(
      "BENCH_MICRO_FAILED",
      `${MICRO_SCRIPT} is missing: in a checkout run \`npm run build\`; an installed package has it only if it was packed after a build: reinstall from one`,
    );
    return { done: Promise.reject(error), stop: async () => {} };
  }
  const dir = makeTempDir("weft-micro-");
  const out = join(dir, "micro.json");
  const child = spawn(process.execPath, [MICRO_SCRIPT, "--max-time", String(maxTime), out], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  createInterface({ input: child.stdout }).on("line", (line) => onLine(line.trim()));
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const done = new Promise<MicroResult[]>((resolve, reject) => {
    child.once("error", (e) =>
      reject(new WeftError("BENCH_MICRO_FAILED", `microbenchmarks failed to start: ${e.message}`, { cause: e })),
    );
    child.once("exit", (code, signal) => {
      try {
        if (code !== 0)
          throw new WeftError(
            "BENCH_MICRO_FAILED",
            `microbenchmarks exited with ${code ?? signal}: ${stderr.trim().split("\n").slice(-3).join(" ")}`,
          );
        resolve((JSON.parse(readFileSync(out, "utf8")) as { results: MicroResult[] }).results);
      } catch (error) {
        reject(error);
      } finally {
        removeTempDir(dir);
      }
    });
  });
  return {
    done,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    },
  };
}
