// `weft bench` settings: the command line's values checked and completed with defaults, which
// --quick shrinks to a smoke run (explicit values still win), and the setups they make: what each
// lab runs, a backend and, for the userspace ones, one of the --offloads settings.
import { BACKEND_TYPES, USERSPACE_BACKENDS, type BackendType } from "../backends/backend.js";
import { IPV6_BACKENDS } from "../config/net-conf.js";
import { WeftError } from "../errors.js";

/** The backend every ratio refers to, the kernel's VXLAN as flannel programs it; also its setup's name. */
export const BASELINE: BackendType = "vxlan";

export const OFFLOADS_CHOICES = ["on", "off"] as const;
export type OffloadsChoice = (typeof OFFLOADS_CHOICES)[number];

/** What one lab runs; its name keys the tables, chart, samples and report. */
export interface BenchSetup {
  /** The backend's name, with " (offloads off)" for a userspace backend run without offloads. */
  name: string;
  backend: BackendType;
  /** Backend.Offloads of its net-conf.json (userspace backends only). */
  offloads?: boolean;
}

export interface BenchSettings {
  /** The backends compared, baseline first. */
  backends: BackendType[];
  /** --offloads: the settings each userspace backend runs with, "on" first. */
  offloads: OffloadsChoice[];
  /** One per lab, baseline first, a backend's setups side by side ("on" before "off"). */
  setups: BenchSetup[];
  /** --family: address families of the pod traffic; 6 adds TCP runs over IPv6 on the setups whose
   *  backend carries it (an IPv6-only lab of their own beside each one's IPv4 lab). */
  families: Array<4 | 6>;
  /** Seconds per iperf3 run (TCP and UDP). */
  duration: number;
  /** TCP runs, one per stream count. */
  streams: number[];
  /** Every round runs every workload on every setup. */
  rounds: number;
  quick: boolean;
  pingCount: number;
  pingIntervalS: number;
  /** Seconds of the idle-cost window (all setups at once, no traffic). */
  idleSeconds: number;
  /** benchmark.js maxTime per microbenchmark case, seconds. */
  microMaxTime: number;
  /** Report directory. */
  out: string;
}

export interface BenchFlags {
  backends?: string[];
  offloads?: string[];
  family?: string[];
  duration?: number;
  streams?: number[];
  rounds?: number;
  out?: string;
  quick?: boolean;
}

export const DEFAULT_BACKENDS: BackendType[] = ["vxlan", "host-gw", "wasm-vxlan", "udp"];

export function resolveSettings(f: BenchFlags, now = new Date(), pid = process.pid): BenchSettings {
  const quick = f.quick ?? false;
  const backends = [...new Set(f.backends ?? DEFAULT_BACKENDS)];
  for (const b of backends) {
    if (!(BACKEND_TYPES as readonly string[]).includes(b))
      throw new WeftError("BENCH_BAD_BACKEND", `unknown backend "${b}"; choose from ${BACKEND_TYPES.join(", ")}`);
  }
  if (!backends.includes(BASELINE))
    throw new WeftError(
      "BENCH_NO_BASELINE",
      `--backends must include ${BASELINE}: every figure is reported as a ratio to kernel ${BASELINE} from the same run`,
    );
  const positive = (v: number | undefined, what: string, dflt: number) => {
    if (v === undefined) return dflt;
    if (!Number.isInteger(v) || v < 1)
      throw new WeftError("BENCH_BAD_SETTING", `${what} must be a whole number of at least 1, not ${v}`);
    return v;
  };
  const streams = (f.streams ?? [1, 4]).map((n) => positive(n, "--streams", 1));
  if (streams.length === 0) throw new WeftError("BENCH_BAD_SETTING", "--streams needs at least one stream count");
  const given = f.offloads ?? ["on"];
  if (given.length === 0 || given.some((c) => !(OFFLOADS_CHOICES as readonly string[]).includes(c))) {
    throw new WeftError("BENCH_BAD_SETTING", `--offloads takes on, off or on,off, not "${given.join(",")}"`);
  }
  const offloads = OFFLOADS_CHOICES.filter((c) => given.includes(c));
  const family = f.family ?? ["4"];
  if (family.length === 0 || !family.includes("4") || family.some((x) => x !== "4" && x !== "6")) {
    throw new WeftError(
      "BENCH_BAD_SETTING",
      `--family takes 4 or 4,6 (IPv4's figures are the ones every ratio refers to), not "${family.join(",")}"`,
    );
  }
  // Baseline first: its column comes first in every table.
  const ordered = [BASELINE, ...backends.filter((b) => b !== BASELINE)] as BackendType[];
  if (offloads.includes("off") && !ordered.some((b) => USERSPACE_BACKENDS.includes(b))) {
    throw new WeftError(
      "BENCH_BAD_SETTING",
      `--offloads off applies to the userspace backends (${USERSPACE_BACKENDS.join(", ")}), and --backends has none`,
    );
  }
  return {
    backends: ordered,
    offloads,
    families: family.includes("6") ? [4, 6] : [4],
    setups: ordered.flatMap((b) =>
      USERSPACE_BACKENDS.includes(b) ? offloads.map((c) => userspaceSetup(b, c === "on")) : [{ name: b, backend: b }],
    ),
    duration: positive(f.duration, "--duration", quick ? 1 : 10),
    streams: [...new Set(streams)],
    rounds: positive(f.rounds, "--rounds", quick ? 1 : 3),
    quick,
    // p99 needs well over 100 replies; at 5 ms apart they take 2 s (0.5 s in --quick).
    pingCount: quick ? 100 : 400,
    pingIntervalS: 0.005,
    // The measure: one minute without traffic (5 s in --quick, which only smoke-tests).
    idleSeconds: quick ? 5 : 60,
    microMaxTime: quick ? 0.05 : 1,
    // Milliseconds and the pid: two runs started in the same second must not share a directory
    // (a report's files would overwrite the other's); names still sort by start time.
    out: f.out ?? `bench/results/${now.toISOString().replace(/:/g, "-")}-${pid}`,
  };
}

/**
 * A userspace backend's setup. Its name is the bare backend's when offloads are on (the default,
 * so reports without --offloads read as before), and says so when they are off.
 */
/** Whether a setup also runs the IPv6 TCP workloads (its backend carries IPv6 and --family has 6). */
export function runsIpv6(settings: Pick<BenchSettings, "families">, setup: BenchSetup): boolean {
  return settings.families.includes(6) && IPV6_BACKENDS.includes(setup.backend);
}

function userspaceSetup(backend: BackendType, offloads: boolean): BenchSetup {
  return { name: offloads ? backend : `${backend} (offloads off)`, backend, offloads };
}
