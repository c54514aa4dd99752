// Prometheus metrics (prom-client), read from the layers' own counters when scraped: nothing on
// the packet path or in gossip does extra work for them.
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { buildInfo, commitLabel } from "../build-info.js";
import type { Backend, BackendCounters } from "../backends/backend.js";
import { withTotals, type DataplaneCounters, type DataplaneTotals } from "../dataplane/dataplane.js";
import type { ControlPlane } from "../control/control-plane.js";
import { MEMBER_STATES } from "../control/gossip/delegate.js";
import type { GossipCounters } from "../control/gossip/observability.js";
import { type RefusedConnections, TCP_MAX_CONNECTIONS, TCP_MAX_CONNECTIONS_PER_SOURCE } from "./http.js";
import type { SocketDrops } from "./socket-drops.js";

/** A counter whose value comes from elsewhere at scrape time. */
function mirroredCounter(
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[],
  read: (set: (labels: Record<string, string>, v: number) => void) => void,
): void {
  new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      read((labels, v) => this.inc(labels, v));
    },
  });
}

/** One family's backend instance: a userspace backend runs a dataplane per family (weft.<VNI>, weft-v6.<VNI>). */
export interface FamilyBackend {
  family: 4 | 6;
  /** Absent while the family has none running (being replaced): its stopped dataplanes' counters still show. */
  backend?: Backend;
  /** The family's stopped dataplanes' counters, added to the running one's: a swap or restart makes none fall. */
  dataplaneBase?: DataplaneTotals;
  /** With no backend running after a userspace one: its dataplane's workers, none of them serving now. */
  workersDown?: number;
}

/** The failure detector's and membership's events, as weft_gossip_protocol_total's `event` (a fixed set). */
const PROTOCOL_EVENTS: ReadonlyArray<readonly [string, (c: GossipCounters) => number]> = [
  ["probes", (c) => c.protocol.probes],
  ["probeFailures", (c) => c.protocol.probeFailures],
  ["suspicionsRaised", (c) => c.protocol.suspicionsRaised],
  ["deathsDeclared", (c) => c.protocol.deathsDeclared],
  ["refutations", (c) => c.protocol.refutations],
  ["nameConflicts", (c) => c.protocol.nameConflicts],
  ["handlerErrors", (c) => c.protocol.handlerErrors],
  ["streamFailures", (c) => c.frames.streamFailures],
];

/**
 * A registry whose scrape reads each family's dataplane counters once, for all the metrics that
 * show them: reading them sums every queue pair's and worker's counters, on the main thread.
 */
class ScrapeRegistry extends Registry {
  /** The running scrapes' dataplane counters by backend instance, taken at first use. */
  private snapshot?: Map<Backend, DataplaneCounters>;
  private scrapes = 0;

  constructor(private readonly backends: () => FamilyBackend[]) {
    super();
  }

  override async metrics(): Promise<string> {
    this.scrapes++;
    this.snapshot ??= new Map();
    try {
      return await super.metrics();
    } finally {
      if (--this.scrapes === 0) this.snapshot = undefined;
    }
  }

  /**
   * Every running dataplane's counters, each sample labelled with its `family` ("4" or "6"), so
   * that a dual-stack node shows both dataplanes under one name per metric.
   */
  eachDataplane(read: (d: DataplaneCounters, family: string, backend: Backend) => void): void {
    for (const { family, backend, dataplaneBase } of this.backends()) {
      if (!backend) continue;
      let d = this.snapshot?.get(backend);
      if (!d) {
        const running = backend.dataplaneCounters?.();
        d = running && withTotals(running, dataplaneBase);
        if (d) this.snapshot?.set(backend, d);
      }
      if (d) read(d, String(family), backend);
    }
  }

  /**
   * Every family's dataplane totals: the running dataplane's as eachDataplane reads them, or,
   * while the family runs none (a swap, a restart's backoff, a kernel backend after a userspace
   * one), its stopped ones', so that no counter's series goes away meanwhile.
   */
  eachDataplaneTotals(read: (d: DataplaneTotals, family: string) => void): void {
    const shown = new Set<string>();
    this.eachDataplane((d, family) => {
      shown.add(family);
      read(d, family);
    });
    for (const { family, dataplaneBase } of this.backends())
      if (dataplaneBase && !shown.has(String(family))) read(dataplaneBase, String(family));
  }
}

/**
 * `backends` lists the running instance of each enabled family, IPv4 first (the userspace
 * backends run one dataplane per family); `counters` sums the kernel programming of every
 * family's instance, and of the instances stopped before (so that it never falls); `leases` lists this node's subnets, one per enabled family; `backendRestarts` counts each family's backends replaced after a failure.
 */
export function agentMetrics(
  control: ControlPlane,
  backends: () => FamilyBackend[],
  counters: () => BackendCounters,
  leases: () => string[],
  socketDrops: () => SocketDrops | undefined,
  /** The agent's own state (absent for a registry of the layers alone, as some tests make). */
  agent?: {
    ready: () => boolean;
    backendRestarts: () => Array<{ family: 4 | 6; restarts: number }>;
    logLinesDropped: () => number;
    /** Absent until the HTTP servers listen. */
    httpRefused: () => RefusedConnections | undefined;
  },
): Registry {
  const registry = new ScrapeRegistry(backends);
  const eachDataplane = registry.eachDataplane.bind(registry);
  const eachDataplaneTotals = registry.eachDataplaneTotals.bind(registry);
  // The event-loop-lag histogram samples on a libuv timer; prom-client's default (10 ms) wakes an
  // idle agent 100 times a second, about half its idle CPU. Once a second keeps the metric.
  // prom-client's names begin process_ or nodejs_: "weft_" makes weft_process_cpu_seconds_total, weft_nodejs_heap_size_used_bytes.
  collectDefaultMetrics({ register: registry, prefix: "weft_", eventLoopMonitoringPrecision: 1000 });
  const build = buildInfo();
  new Gauge({
    name: "weft_build_info",
    help: "1, labelled with this agent's version and the git commit it was built from (-dirty: with uncommitted changes; unknown: built without one)",
    labelNames: ["version", "commit"],
    registers: [registry],
  }).set({ version: build.version, commit: commitLabel(build) }, 1);
  new Gauge({
    name: "weft_members",
    help: "Gossip members by state",
    labelNames: ["state"],
    registers: [registry],
    collect() {
      // Every state, 0 too: a series that went away would read as no data, not as none.
      for (const state of MEMBER_STATES) this.set({ state }, 0);
      for (const m of control.allMembers()) this.inc({ state: m.state });
    },
  });
  if (agent) {
    new Gauge({
      name: "weft_ready",
      help: "1 while the agent is ready (what /readyz answers 200 to), 0 while it is not (weft status says why)",
      registers: [registry],
      collect() {
        this.set(agent.ready() ? 1 : 0);
      },
    });
    mirroredCounter(
      registry,
      "weft_backend_restarts_total",
      "Backend instances replaced by address family after they stopped carrying pod traffic by themselves (a userspace backend's TUN device deleted, its dataplane workers dying in a row or failing to start; vxlan's IPv6 device deleted over an underlay too small to make it again)",
      ["family"],
      (set) => {
        for (const l of agent.backendRestarts()) set({ family: String(l.family) }, l.restarts);
      },
    );
    mirroredCounter(
      registry,
      "weft_log_lines_dropped_total",
      "Log lines dropped: stdout took none while 1 MiB of them waited, its reader was gone, or while stopping another write error (CLI_LOG_LINES_DROPPED says how many once it takes lines again)",
      [],
      (set) => set({}, agent.logLinesDropped()),
    );
    mirroredCounter(
      registry,
      "weft_http_connections_refused_total",
      `Connections the agent's HTTP servers closed unanswered or failed to take, by reason: evicted (no request in yet, closed for a newer connection at a TCP port's cap), source (over a TCP port's ${TCP_MAX_CONNECTIONS_PER_SOURCE} at once from one source, an IPv4 address or IPv6 /64, all with a request in), limit (over a TCP port's ${TCP_MAX_CONNECTIONS} at once, all with a request in), error (accept failed: AGENT_HTTP_SERVER_ERROR)`,
      ["reason"],
      (set) => {
        const r = agent.httpRefused() ?? { source: 0, limit: 0, evicted: 0, error: 0 };
        for (const [reason, n] of Object.entries(r)) set({ reason }, n);
      },
    );
  }
  new Gauge({
    name: "weft_lease",
    help: "1 while this node holds the subnet in the label (one per enabled address family)",
    labelNames: ["subnet"],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of leases()) this.set({ subnet: s }, 1);
    },
  });
  mirroredCounter(
    registry,
    "weft_gossip_messages_total",
    "Gossip messages by direction and kind",
    ["direction", "kind"],
    (set) => {
      const c = control.gossipCounters();
      for (const [dir, byKind] of [
        ["sent", c.sent],
        ["received", c.received],
      ] as const) {
        for (const [kind, t] of Object.entries(byKind)) set({ direction: dir, kind }, t.messages);
      }
    },
  );
  mirroredCounter(registry, "weft_gossip_bytes_total", "Gossip message bytes by direction", ["direction"], (set) => {
    const c = control.gossipCounters();
    for (const [dir, byKind] of [
      ["sent", c.sent],
      ["received", c.received],
    ] as const) {
      set(
        { direction: dir },
        Object.values(byKind).reduce((n, t) => n + t.bytes, 0),
      );
    }
  });
  mirroredCounter(registry, "weft_gossip_dropped_total", "Gossip frames dropped, by reason", ["reason"], (set) => {
    for (const [reason, n] of Object.entries(control.gossipCounters().dropped)) set({ reason }, n);
  });
  mirroredCounter(
    registry,
    "weft_gossip_transport_total",
    "Gossip transport refusals and failures, by event (rejectedConnections: inbound streams over the limits with none to close for them; overBudgetStreams and evictedForSlot: inbound requests unfinished, or answered with the reply not yet out, closed for the byte budget or a slot; inboundStreamErrors: inbound streams that failed, and accepts the TCP server failed; packetSendErrors: UDP packets the kernel refused to send; oversizePackets and oversizeStreams: outgoing packets over the packet size limit, not sent, and inbound stream frames over the stream size limit, refused)",
    ["event"],
    (set) => {
      for (const [event, n] of Object.entries(control.transportCounters())) set({ event }, n);
    },
  );
  mirroredCounter(
    registry,
    "weft_gossip_protocol_total",
    "Failure detector and membership events, by event (probes, probeFailures: probes a member did not answer, direct or indirect; suspicionsRaised: members this node suspected; deathsDeclared: suspicions that ran out here, the member declared dead; refutations: this node suspected or declared dead and answering with a higher incarnation; nameConflicts: alive messages naming a live member at another address, refused; handlerErrors: a handler or delegate that threw, contained; streamFailures: this node's TCP requests that got no reply)",
    ["event"],
    (set) => {
      const c = control.gossipCounters();
      for (const [event, read] of PROTOCOL_EVENTS) set({ event }, read(c));
    },
  );
  // ok never falls: the backends count through KernelStats (backend.ts).
  mirroredCounter(
    registry,
    "weft_kernel_programming_total",
    "Kernel programming commands and errors",
    ["result"],
    (set) => {
      const c = counters();
      set({ result: "ok" }, c.kernelCommands - c.kernelErrors);
      set({ result: "error" }, c.kernelErrors);
    },
  );
  new Gauge({
    name: "weft_peers_unreachable",
    help: "Peers the backend of the address family cannot reach now (host-gw off-link, wire format mismatch, a subnet overlapping another's, no room left in the userspace dataplane); a node refused in both families counts in each",
    labelNames: ["family"],
    registers: [registry],
    collect() {
      this.reset();
      for (const { family, backend } of backends())
        if (backend) this.set({ family: String(family) }, backend.counters().peersUnreachable);
    },
  });
  mirroredCounter(
    registry,
    "weft_dataplane_packets_total",
    "Userspace dataplane packets by address family, direction and verdict (FORWARD, REPLY or a drop reason)",
    ["family", "direction", "verdict"],
    (set) =>
      eachDataplaneTotals((d, family) => {
        for (const [dir, c] of [
          ["tx", d.tx],
          ["rx", d.rx],
        ] as const) {
          for (const [verdict, n] of Object.entries(c.packets)) set({ family, direction: dir, verdict }, Number(n));
        }
      }),
  );
  // Dataplane counters per family and direction (tx: TUN to socket, rx: socket to TUN).
  const perDirection = (name: string, help: string, pick: (c: DataplaneCounters["tx"]) => bigint) =>
    mirroredCounter(registry, name, help, ["family", "direction"], (set) =>
      eachDataplaneTotals((d, family) => {
        for (const direction of ["tx", "rx"] as const) set({ family, direction }, Number(pick(d[direction])));
      }),
    );
  perDirection(
    "weft_dataplane_bytes_total",
    "Userspace dataplane bytes forwarded by address family and direction",
    (c) => c.bytesForwarded,
  );
  new Gauge({
    // Labelled by backend so that kernel backends, which have no dataplane, show no sample (an
    // unlabelled gauge would read 0 there, as if offloads had turned themselves off).
    name: "weft_dataplane_offloads",
    help: "1 while the userspace dataplane of the address family runs with segmentation offloads (TSO through TUN, UDP GSO/GRO), 0 when off (the reason is in /status and the log)",
    labelNames: ["backend", "family"],
    registers: [registry],
    collect() {
      this.reset();
      eachDataplane((d, family, b) => this.set({ backend: b.type, family }, d.offload.enabled ? 1 : 0));
    },
  });
  new Gauge({
    name: "weft_dataplane_udp_gso_refused_sockets",
    help: "Sockets of the userspace dataplane of the address family on which the kernel refused a UDP GSO send (EIO: an IPsec/xfrm policy on the underlay route, or a device without TX checksum offload before Linux 6.11); they send single datagrams since, each one a pass through the kernel's send path",
    labelNames: ["backend", "family"],
    registers: [registry],
    collect() {
      this.reset();
      eachDataplane((d, family, b) => this.set({ backend: b.type, family }, d.offload.udpGsoRefused));
    },
  });
  new Gauge({
    name: "weft_dataplane_tun_steering",
    help: "1 while the userspace dataplane's TUN device picks each sent packet's queue pair by weft's flow hash (an eBPF steering program), as the sockets do on receive; 0 while it keeps its own flow table, or has one pair (the reason is in /status and the log)",
    labelNames: ["backend", "family"],
    registers: [registry],
    collect() {
      this.reset();
      eachDataplane((d, family, b) => this.set({ backend: b.type, family }, d.tunSteering.by === "program" ? 1 : 0));
    },
  });
  new Gauge({
    name: "weft_dataplane_route_table_huge_page_bytes",
    help: "Bytes of the userspace dataplane's route tables on transparent huge pages (advised MADV_HUGEPAGE), by address family; 0 when on 4 KiB pages (the reason is in /status and the log)",
    labelNames: ["backend", "family"],
    registers: [registry],
    collect() {
      this.reset();
      eachDataplane((d, family, b) => this.set({ backend: b.type, family }, d.routeTablePages.advisedBytes));
    },
  });
  new Gauge({
    name: "weft_dataplane_memory_bytes",
    help: "Bytes of the userspace dataplane's shared WebAssembly memory (its route table, per-queue contexts and counters, packet slots), by address family; an IPv6 dataplane holds no IPv4 route table",
    labelNames: ["backend", "family"],
    registers: [registry],
    collect() {
      this.reset();
      eachDataplane((d, family, b) => this.set({ backend: b.type, family }, d.memoryBytes));
    },
  });
  perDirection(
    "weft_dataplane_offload_segments_total",
    "Segments cut from super-packets (tx) and merged into super-packets (rx) by the userspace dataplane, by address family",
    (c) => c.offloadSegments,
  );
  // Receive only: a sent packet's inner checksum is never checked, so there is no tx series.
  mirroredCounter(
    registry,
    "weft_dataplane_checksum_trusted_total",
    "Packets of UDP GRO receives (outer UDP checksum verified by the kernel) passed to the TUN device without the userspace dataplane's inner checksum check, by address family",
    ["family"],
    (set) => eachDataplaneTotals((d, family) => set({ family }, Number(d.rx.checksumTrusted))),
  );
  mirroredCounter(
    registry,
    "weft_dataplane_queue_drops_total",
    "Userspace dataplane packets dropped at its queues, by address family and reason: queue-delay (waited longer than the target in a socket's receive queue), flow-queue (dropped at the head of the fattest flow of the send path's flow queue, or held in it or between it and the hot path by a worker that died), send (socket full, left after the first on a closed socket, or not yet sent by a worker that died), tun-write (TUN device full, left after the first on a closed queue or deleted device, or not yet written by a worker that died), tun-ring (the kernel dropped them at the TUN device's ring, full of packets the workers had not read yet: its tx_dropped)",
    ["family", "reason"],
    (set) =>
      eachDataplaneTotals((d, family) => {
        set({ family, reason: "queue-delay" }, Number(d.io.queueDelayDrops));
        set({ family, reason: "flow-queue" }, Number(d.io.flowQueueDrops));
        set({ family, reason: "send" }, Number(d.io.sendShortfall));
        set({ family, reason: "tun-write" }, Number(d.io.tunWriteShortfall));
        if (d.tunRingDrops !== undefined) set({ family, reason: "tun-ring" }, Number(d.tunRingDrops));
      }),
  );
  mirroredCounter(
    registry,
    "weft_dataplane_io_errors_total",
    "Userspace dataplane packets lost to I/O errors, by address family and op: tun-read (a TUN read that failed; the worker gives up to a restart after 64 in a row), tun-write (a TUN write the kernel refused), send (a datagram the kernel refused to send, e.g. no route to the peer's underlay address; a refused train counts each of its datagrams); a drain whose socket or queue closed or TUN device went counts its first packet here and the rest as queue drops",
    ["family", "op"],
    (set) =>
      eachDataplaneTotals((d, family) => {
        set({ family, op: "tun-read" }, Number(d.io.tunReadErrors));
        set({ family, op: "tun-write" }, Number(d.io.tunWriteErrors));
        set({ family, op: "send" }, Number(d.io.sendErrors));
      }),
  );
  mirroredCounter(
    registry,
    "weft_dataplane_udp_gso_too_big_total",
    "Userspace dataplane sends in which the kernel refused a UDP GSO message as larger than the path's MTU (the underlay's MTU lowered, a route's locked mtu, a PMTU exception), by address family; its datagrams went again one by one, nothing lost, at the cost of the refused send on every such batch",
    ["family"],
    (set) => eachDataplaneTotals((d, family) => set({ family }, Number(d.io.udpGsoTooBig))),
  );
  mirroredCounter(
    registry,
    "weft_dataplane_worker_restarts_total",
    "Userspace dataplane workers replaced after dying, by address family",
    ["family"],
    (set) => eachDataplaneTotals((d, family) => set({ family }, d.workerRestarts)),
  );
  new Gauge({
    name: "weft_dataplane_workers_down",
    help: "Userspace dataplane workers not serving their queue pairs now (dead and waiting for a restart, or on a thread that could not start), by address family: their pairs' flows go nowhere meanwhile",
    labelNames: ["family"],
    registers: [registry],
    collect() {
      this.reset();
      eachDataplane((d, family) => this.set({ family }, d.workersDown));
      for (const { family, backend, workersDown } of backends())
        if (!backend && workersDown !== undefined) this.set({ family: String(family) }, workersDown);
    },
  });
  mirroredCounter(
    registry,
    "weft_dataplane_socket_drops_total",
    "Datagrams the kernel dropped on the userspace dataplane's UDP sockets before they were read (full receive buffer, bad checksum; /proc/net/udp and udp6 drops), by address family of the dataplane",
    ["family"],
    (set) => {
      for (const f of socketDrops()?.families ?? []) set({ family: String(f.family) }, f.drops);
    },
  );
  return registry;
}
