// `npm run chaos`: the full chaos suite on real agents (about 15 minutes, root), or `--short`,
// the scenarios `npm test` runs. Prints each scenario's outcome as it ends, then the table, and
// writes everything as JSON (--out, default bench/results/chaos-<timestamp>/report.json).
import { mkdir, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { Command } from "commander";
import { projectFile } from "../../paths.js";
import { FULL, runScenario, SHORT, stopRequested, table, type ScenarioResult } from "./run.js";
import { fullScenarios, shortScenarios } from "./scenarios.js";

const program = new Command("chaos")
  .description("chaos scenarios on real weft agents in network namespaces (root)")
  .option("--short", "the short suite (as in npm test): shorter faults, generous bounds", false)
  .option("--only <regex>", "run only scenarios whose name matches")
  .option("--out <file>", "JSON report path")
  .option("--logs <dir>", "keep every agent's log, in <dir>/<scenario>/<host>.log")
  .parse();

const o = program.opts<{ short: boolean; only?: string; out?: string; logs?: string }>();
const mode = o.short ? SHORT : FULL;
const only = o.only ? new RegExp(o.only, "i") : undefined;
const scenarios = (o.short ? shortScenarios() : fullScenarios()).filter((s) => !only || only.test(s.name));
const started = new Date();
const results: ScenarioResult[] = [];
for (const sc of scenarios) {
  if (stopRequested()) break;
  process.stdout.write(`-- ${sc.name}\n`);
  const logs =
    o.logs &&
    join(
      o.logs,
      sc.name
        .replace(/[^a-z0-9]+/gi, "-")
        .replace(/^-|-$/g, "")
        .toLowerCase(),
    );
  results.push(await runScenario(sc, mode, (l) => process.stdout.write(l + "\n"), logs || undefined));
}
process.stdout.write("\n" + table(results) + "\n");
const out =
  o.out ?? projectFile("bench", "results", `chaos-${started.toISOString().replace(/[:.]/g, "-")}`, "report.json");
await mkdir(dirname(out), { recursive: true });
const report = {
  mode: mode.name,
  bounds: mode.bounds,
  durations: mode.durations,
  cpu: cpus()[0]?.model,
  started: started.toISOString(),
  results,
};
// Infinity ("never") is not JSON: null.
await writeFile(
  out,
  JSON.stringify(report, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2) + "\n",
);
process.stdout.write(`report: ${out}\n`);
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
