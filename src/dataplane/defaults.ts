// The userspace dataplane's latency knobs and their defaults, apart from the dataplane itself so
// that the config schema (src/config/net-conf.ts) can name them without loading the dataplane.
import { availableParallelism } from "node:os";

/**
 * Busy-poll budget after traffic, µs (net-conf.json Backend.BusyPollMicros). Off by default: on a
 * loaded 2-core machine spinning did not lower the median round trip beyond noise and cost
 * throughput (ARCHITECTURE.md, "What bounds it now").
 */
export const DEFAULT_BUSY_POLL_US = 0;
/**
 * Sojourn limit of the sockets' receive queues, µs (Backend.QueueDelayMicros): a few batches'
 * worth of work, far below TCP's timers, and CoDel's usual target.
 */
export const DEFAULT_QUEUE_DELAY_US = 5000;
/**
 * The send path's flow queue (Backend.FlowQueue; assembly/packet/flow-queue.ts), with its TUN ring
 * of 1,024 packets (dataplane.ts): on since session 34. At the defaults of then (2 workers x 4 pairs, 10
 * interleaved rounds) no TCP stream beside a flood stalled and a ping lost 0.7% in one round,
 * against 42% in two rounds without it (a ping that shares the flood's pair loses what the ring
 * tail-drops); ping under load p50 0.41 vs 1.76 ms, p99 6.1 vs 7.6 ms; a single TCP stream some
 * 4% more CPU per GB, paired by round (ARCHITECTURE.md, "Queues"). Earlier, with a ring of 256,
 * it lost as many pings as without it, and its p99 was longer: that is why it was opt-in until then.
 */
export const DEFAULT_FLOW_QUEUE = true;
/**
 * Queue pairs (a TUN queue and its socket) per worker (Backend.QueuesPerWorker). With one, flows
 * that share a worker share its TUN ring and receive queue, so a flood fills them for the others:
 * beside a UDP flood pings lost 17% (median of the rounds), with four 0.3%, the flows that still
 * share a pair aside, and nothing else moved beyond noise (ARCHITECTURE.md, "Queue pairs").
 */
export const DEFAULT_QUEUES_PER_WORKER = 4;
/**
 * Fewest worker threads by default (Backend.Workers; more where there are more cores). A ping or a
 * request waits for the batch its worker is serving: with one worker per core on a 2-core host, a
 * TCP stream and a flood leave no worker free of bulk work, and every light flow shares one with
 * them. With four it usually gets a thread of its own, which sleeps until it comes.
 * Two interleaved runs of 8 rounds, 2 against 4 workers on 2 vCPUs, paired by round: ping under
 * load p50 ×0.66 and ×0.65, p99 ×0.77 and ×0.56; TCP, UDP and the round trip's p50 within 5%,
 * its p99 ×1.08 and ×1.03, the dataplane's own CPU per GB ×0.86–0.95 and the total ×0.97–1.02
 * (ARCHITECTURE.md, "Latency"). An idle worker sleeps until a packet comes, so more of them cost nothing idle.
 */
export const DEFAULT_MIN_WORKERS = 4;

/**
 * Most worker threads (Backend.Workers' limit, and the default's on a host of more cores): the TUN
 * driver's 256 queues leave each of 64 workers 4 queue pairs.
 */
export const MAX_WORKERS = 64;

/** The default worker count in words, for help texts. */
export const DEFAULT_WORKERS_RULE = `one per core, at least ${DEFAULT_MIN_WORKERS}, at most ${MAX_WORKERS}`;

/** The default worker count (Backend.Workers) on a host of `cores` cores: see DEFAULT_WORKERS_RULE. */
export function defaultWorkers(cores = availableParallelism()): number {
  return Math.min(Math.max(cores, DEFAULT_MIN_WORKERS), MAX_WORKERS);
}
/** Most queues of one TUN device (the kernel's MAX_TAP_QUEUES): Workers × QueuesPerWorker's limit. */
export const TUN_MAX_QUEUES = 256;

/** Most queue pairs one worker serves: its wait reports two fds per pair as bits (WAIT_MAX_FDS, 28). */
export const WORKER_MAX_PAIRS = 14;
