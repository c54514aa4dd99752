// `weft bench`: builds one lab per setup (a backend; the userspace ones once per --offloads
// setting) with real agents, runs every workload on every setup round by round, alternating
// setups, measures the microbenchmarks, and writes the report. Every namespace, device and
// process it makes goes away at the end, also on failure and on Ctrl-C.
import { loadavg } from "node:os";
import { resolve } from "node:path";
import { setTimeout as sleepFor } from "node:timers/promises";
import { gitCommit, recordedCommit, UNKNOWN_COMMIT } from "../build-info.js";
import { errorMessage, WeftError } from "../errors.js";
import { checkTrafficTools } from "../lab/traffic.js";
import { settleAll } from "../util/settle.js";
import { machineInfo } from "./machine.js";
import { runMicro, type MicroResult } from "./micro.js";
import { Progress, type Step } from "./progress.js";
import { REPORT_FILES, terminalSummary, writeReport, type BenchReport } from "./report.js";
import { runsIpv6, type BenchSettings } from "./settings.js";
import { figureDefs, summarize } from "./summary.js";
import { idleCost } from "./load.js";
import {
  agentPids,
  buildLab,
  checkAgents,
  killTrafficTools,
  readyLab,
  teardownLab,
  type BenchLab,
} from "./topology.js";
import {
  runWorkload,
  workloadId,
  workloadLabel,
  type FailedRun,
  type LabWorkload,
  retryable,
  type Sample,
  type Workload,
} from "./workloads.js";

type Action = { step: Step; run: () => Promise<void> };

/** Failures that end the run: every later measurement on the lab would fail too. */
const AGENT_GONE = new Set(["BENCH_AGENT_GONE", "BENCH_PROCESS_GONE"]);

export async function runBench(settings: BenchSettings, command: string): Promise<BenchReport> {
  if (process.getuid?.() !== 0)
    throw new WeftError(
      "BENCH_NEEDS_ROOT",
      "weft bench builds network namespaces: run it as root (sudo npm run bench)",
    );
  // Before any lab: without them every run would fail, one at a time, to the end of a long run.
  checkTrafficTools();
  const startedAt = new Date().toISOString();
  const machine = machineInfo();
  const perRound: LabWorkload[] = [
    ...settings.streams.map((streams) => ({ kind: "tcp" as const, streams })),
    ...(settings.families.includes(6)
      ? settings.streams.map((streams) => ({ kind: "tcp" as const, streams, family: 6 as const }))
      : []),
    { kind: "udp", payload: 64 },
    { kind: "udp", payload: 1400 },
    { kind: "rtt" },
    { kind: "loaded-rtt" },
    { kind: "flood-tail" },
  ];
  const idle: Workload = { kind: "idle" };
  const workloads = [...perRound, idle];
  const labs: BenchLab[] = [];
  const samples: Sample[] = [];
  const failures: FailedRun[] = [];
  const retried: FailedRun[] = [];
  let micro: MicroResult[] = [];
  let stopMicro: (() => Promise<void>) | undefined;

  const actions: Action[] = [];
  const plan = (label: string, weight: number, run: () => Promise<void>) =>
    actions.push({ step: { label, weight }, run });
  const setups = settings.setups;
  const labOf = (name: string) => labs.find((l) => l.setup.name === name)!;
  // Start every lab's agents first, then wait for them: their startups overlap.
  for (const s of setups)
    plan(
      `building the ${s.name} lab${runsIpv6(settings, s) ? "s (IPv4, IPv6)" : ""}, starting its agents`,
      3,
      async () => void (await buildLab(s, labs, runsIpv6(settings, s))),
    );
  for (const s of setups) plan(`waiting for ${s.name} agents, adding pods`, 4, () => readyLab(labOf(s.name)));
  let seq = 0;
  const names = setups.map((x) => x.name);
  for (let round = 1; round <= settings.rounds; round++) {
    const order = setupOrder(names, round);
    for (const w of perRound) {
      for (const name of order) {
        // IPv6 runs only where the backend carries IPv6: the other setups' cells stay empty.
        if (w.kind === "tcp" && w.family === 6 && !runsIpv6(settings, setups.find((s) => s.name === name)!)) continue;
        const weight =
          w.kind === "rtt"
            ? settings.pingCount * settings.pingIntervalS + 1
            : w.kind === "flood-tail"
              ? Math.min(settings.duration, 5) + 3
              : settings.duration + 1.5;
        const label = workloadLabel(w);
        plan(`round ${round}/${settings.rounds} · ${name} · ${label}`, weight, async () => {
          const t = new Date().toISOString();
          const at = { setup: name, workload: workloadId(w), round, seq: seq++, startedAt: t };
          const measure = async () => samples.push({ ...at, ...(await runWorkload(labOf(name), w, settings)) });
          try {
            try {
              await measure();
            } catch (error) {
              // The TCP stream of ping under load sometimes stalls beside the flood and its iperf3
              // gives no result, kernel backends too (iperf3's or the harness's, not a dataplane's):
              // measured once more, and the stall reported as retried, not hidden.
              if (interrupted || !(error instanceof WeftError) || !retryable(w.kind, error.code)) throw error;
              checkAgents(labOf(name)); // throws BENCH_AGENT_GONE if an agent's exit was the cause
              retried.push({ ...at, label, ...recordOf(error) });
              process.stderr.write(
                `\nround ${round} · ${name} · ${label}: [${error.code}] ${error.message}; measuring it again\n${detailText(error)}`,
              );
              await measure();
            }
          } catch (error) {
            // One stalled run (a TCP stream that shared a queue with a flood stalled for 35 s
            // once) must not cost the whole measurement: report it and go on (a workload settles
            // all its tools before it fails). A bug, or an agent gone, still ends the run.
            if (interrupted || !(error instanceof WeftError) || AGENT_GONE.has(error.code)) throw error;
            checkAgents(labOf(name)); // throws BENCH_AGENT_GONE if the failure was an agent's exit
            failures.push({ ...at, label, ...recordOf(error) });
            process.stderr.write(
              `\nround ${round} · ${name} · ${label} failed: [${error.code}] ${error.message}\n${detailText(error)}`,
            );
          }
        });
      }
    }
  }
  // Once for all setups in the same window, after the traffic (a few seconds for queues to drain
  // and busy polling to stop): what an agent costs while nothing flows.
  const afterTraffic = actions.length;
  plan(`idle cost (${settings.idleSeconds} s, every setup at once)`, settings.idleSeconds + 3, async () => {
    // The machine's load of the measurements, before the idle window and the microbenchmarks
    // (a single-core minute of weft's own) move it.
    machine.loadAverageAfterTraffic = loadavg()[0];
    await sleepFor(3000, undefined, { signal: abort.signal });
    const t = new Date().toISOString();
    const cpu = await idleCost(
      setups.map((s) => ({ pids: agentPids(labOf(s.name)) })),
      settings.idleSeconds,
      abort.signal,
    );
    setups.forEach((s, i) =>
      samples.push({
        setup: s.name,
        workload: workloadId(idle),
        round: 1,
        seq: seq++,
        startedAt: t,
        values: { cpuPercent: cpu[i] },
        raw: { seconds: settings.idleSeconds },
      }),
    );
  });
  plan("stopping agents, removing labs", 2 * setups.length, () => cleanup());
  // The microbenchmarks last, once no agent or traffic runs beside them.
  plan("microbenchmarks", settings.quick ? 20 : 60, async () => {
    const m = runMicro(settings.microMaxTime, (line) => progress.detail(line));
    stopMicro = m.stop;
    micro = await m.done;
    stopMicro = undefined;
  });

  const progress = new Progress(actions.map((a) => a.step));
  const tornDown = new Set<BenchLab>();
  const teardowns: Promise<void>[] = [];
  /** Tears down every lab not yet being torn down; throws the first failure. */
  const cleanup = async () => {
    const todo = labs.filter((l) => !tornDown.has(l));
    todo.forEach((l) => tornDown.add(l));
    const mine = settleAll(todo.map(teardownLab)).then(() => undefined);
    teardowns.push(mine.catch(() => undefined));
    await mine;
  };
  let interrupted: NodeJS.Signals | undefined;
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    // A second signal (Ctrl-C again) finds the stop under way. src/lab/netns.ts's own handler
    // does nothing while this one is registered; its exit hook removes any namespace still left.
    if (interrupted) return;
    interrupted = signal;
    progress.stop();
    process.stderr.write(`\n${signal}: stopping traffic and agents, removing every namespace and device...\n`);
    // The running step fails once its tools are gone; the loop below then stops.
    killTrafficTools(labs);
    abort.abort();
    void stopMicro?.();
    void cleanup().catch(() => undefined);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let failure: unknown;
  let completed = 0;
  try {
    for (const a of actions) {
      if (interrupted) break;
      progress.begin();
      await a.run();
      progress.end();
      completed++;
    }
  } catch (error) {
    // After an interrupt the running step fails because its tools were killed: not the story.
    if (!interrupted) failure = error;
  }
  progress.stop();
  await Promise.all(teardowns);
  // Labs built after an interrupt, or all of them when a step failed.
  await cleanup().catch((error: unknown) => void (failure ??= error));
  process.removeListener("SIGINT", onSignal);
  process.removeListener("SIGTERM", onSignal);
  if (interrupted)
    throw new WeftError(
      "BENCH_INTERRUPTED",
      `stopped by ${interrupted}; the agents were stopped and every namespace and device removed`,
    );
  // A failure once every traffic round ran (idle cost, teardown, microbenchmarks) still leaves
  // the rounds' samples worth a report: written with the failure in it, then thrown.
  if (failure && completed < afterTraffic) throw failure;

  const report: BenchReport = {
    tool: "weft bench",
    command,
    startedAt,
    finishedAt: new Date().toISOString(),
    // The commit dist/ was built from; a build without the record, its checkout's HEAD.
    git: recordedCommit() ?? gitCommit() ?? UNKNOWN_COMMIT,
    machine,
    settings,
    netConf: Object.fromEntries(
      labs.flatMap((l) => l.all().map((x) => [`${l.setup.name}${x.family === 6 ? " (IPv6)" : ""}`, x.netConf])),
    ),
    offload: Object.fromEntries(
      labs.filter((l) => Object.keys(l.offload).length > 0).map((l) => [l.setup.name, l.offload]),
    ),
    figures: summarize(
      figureDefs(workloads),
      setups.map((s) => s.name),
      samples,
      failures,
    ),
    samples,
    failures,
    retried,
    micro,
    ...(failure !== undefined && { incomplete: incompleteOf(actions[completed]?.step.label, failure) }),
  };
  const dir = resolve(settings.out);
  await writeReport(dir, report);
  process.stdout.write(
    terminalSummary(report) +
      `\n\nreport: ${resolve(dir, REPORT_FILES.markdown)} (with ${REPORT_FILES.chart}; raw samples in ${REPORT_FILES.json})\n`,
  );
  if (failure) throw failure;
  if (failures.length > 0)
    throw new WeftError(
      "BENCH_RUNS_FAILED",
      `${failures.length} of ${samples.filter((x) => x.workload !== workloadId(idle)).length + failures.length} runs failed (listed above and in the report); their cells take the median of the rounds that ran (none: "-"): look at the failures' messages, then run again`,
    );
  return report;
}

/** The step after the traffic rounds that failed (none: the final teardown), and its error. */
function incompleteOf(step: string | undefined, e: unknown) {
  return {
    step: step ?? "stopping agents, removing labs",
    ...(e instanceof WeftError ? { code: e.code, message: e.message } : { message: errorMessage(e) }),
  };
}

/** What a failed run records of its error (the detail: a stall's sockets and tools' output). */
function recordOf(e: WeftError) {
  return { code: e.code, message: e.message, ...(e.detail && { detail: e.detail }) };
}

const detailText = (e: WeftError) => (e.detail ? `${e.detail}\n` : "");

/**
 * The order of the setups in a round (every workload of the round runs them in it; the samples'
 * `seq` records it). Each round starts with another setup, and every other round runs them
 * backwards, so with three setups or more no setup always runs right after the same one (a
 * rotation alone keeps each setup's predecessor: the baseline would always follow one setup and
 * inherit its leftovers, warm caches or queues still draining).
 */
export function setupOrder(names: readonly string[], round: number): string[] {
  // Round r starts at setup r (rotating) and goes forwards or, every other round, backwards from
  // it; reversing a rotated list instead gave two setups the same order in every round.
  const n = names.length;
  const step = round % 2 === 0 ? n - 1 : 1;
  return names.map((_, i) => names[(round - 1 + i * step) % n]);
}
