// Runs chaos scenarios one after another, each in a lab of its own, and reports a table of
// scenarios × figures (convergence after the heal, time to pod traffic, false deaths, invariant
// violations) plus the same as JSON. Ctrl-C or SIGTERM stops the running scenario's agents and
// removes everything it made before exiting.
import type { Violation } from "./observe.js";
import { ChaosLab, type Bounds, type Figures } from "./lab.js";
import type { Durations, Scenario } from "./scenarios.js";

export interface ChaosMode {
  name: "short" | "full";
  bounds: Bounds;
  durations: Durations;
}

/** The bounds and durations. */
export const FULL: ChaosMode = {
  name: "full",
  bounds: { convergeMs: 30_000, deadRoutesMs: 30_000, restartTrafficMs: 5_000 },
  durations: { partitionS: 60, lossS: 60, slowS: 40, watchS: 20 },
};

/**
 * For `npm test`: shorter faults (still longer than failure detection) and generous bounds, since
 * it asserts what must never happen and what must happen eventually, not how fast (a loaded
 * 2-core machine runs it).
 */
export const SHORT: ChaosMode = {
  name: "short",
  bounds: { convergeMs: 60_000, deadRoutesMs: 60_000, restartTrafficMs: 30_000 },
  durations: { partitionS: 20, lossS: 20, slowS: 20, watchS: 12 },
};

export interface ScenarioResult {
  name: string;
  ok: boolean;
  seconds: number;
  figures: Figures;
  falseDeaths: number;
  violations: Violation[];
  notes: string[];
  /** The scenario itself threw (set-up failed, an agent would not start). */
  error?: string;
}

let current: ChaosLab | undefined;
let hooked = false;
let stopping = false;

/** Whether Ctrl-C or SIGTERM came: no further scenario may start. */
export function stopRequested(): boolean {
  return stopping;
}

/** On Ctrl-C/SIGTERM: close the running scenario's lab (agents, namespaces, mounts), then exit. */
function hookSignals(): void {
  if (hooked) return;
  hooked = true;
  for (const [sig, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`\n${sig}: stopping agents and removing the lab...\n`);
      const done = current ? current.close() : Promise.resolve();
      const limit = setTimeout(() => process.exit(code), 20_000);
      void done.finally(() => {
        clearTimeout(limit);
        process.exit(code);
      });
    });
  }
}

/** Runs one scenario in a lab of its own; `logsTo`: where to keep the agents' logs. */
export async function runScenario(
  sc: Scenario,
  mode: ChaosMode,
  log: (line: string) => void = () => undefined,
  logsTo?: string,
): Promise<ScenarioResult> {
  hookSignals();
  const t0 = Date.now();
  const c = await ChaosLab.open(sc.hosts, sc.seeds ?? 3, mode.bounds, { dualStack: sc.dualStack, logsTo });
  current = c;
  let error: string | undefined;
  try {
    await sc.run(c, mode.durations);
  } catch (err) {
    error = (err as Error).message;
  } finally {
    await c.close();
    current = undefined;
  }
  const violations = [...c.monitor.violations.values()];
  const result: ScenarioResult = {
    name: sc.name,
    ok: !error && violations.length === 0,
    seconds: Math.round((Date.now() - t0) / 1000),
    figures: c.figures,
    falseDeaths: c.monitor.falseDeaths,
    violations,
    notes: c.notes,
    error,
  };
  log(`${result.ok ? "ok  " : "FAIL"} ${sc.name} (${result.seconds} s)`);
  for (const v of violations) log(`     ${v.kind} ×${v.count} [${v.first}–${v.last} s]: ${v.detail}`);
  for (const n of c.notes) log(`     note: ${n}`);
  if (error) log(`     error: ${error.split("\n")[0]}`);
  return result;
}

const fmt = (x: number | undefined) => (x === undefined ? "—" : !Number.isFinite(x) ? "never" : x.toFixed(1));

/** The terminal table: one row per scenario. */
export function table(results: ScenarioResult[]): string {
  const head = ["scenario", "result", "converge s", "traffic s", "false deaths", "violations", "other figures"];
  const rows = results.map((r) => {
    const { convergenceS, trafficS, ...rest } = r.figures;
    const kinds = [...new Set(r.violations.map((v) => v.kind))];
    return [
      r.name,
      r.ok ? "ok" : r.error ? "ERROR" : "FAIL",
      fmt(convergenceS),
      fmt(trafficS),
      String(r.falseDeaths),
      kinds.length ? kinds.join(",") : "0",
      Object.entries(rest)
        .map(([k, v]) => `${k} ${fmt(v)}`)
        .join(", "),
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  return [line(head), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)].join("\n");
}
