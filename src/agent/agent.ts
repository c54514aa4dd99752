// The node agent: joins the gossip control plane, leases a subnet per enabled address family
// (IPv4-only, dual-stack or IPv6-only, as flannel), programs the backend chosen in net-conf.json
// (one instance per family, as flannel runs flannel.<VNI> and flannel-v6.<VNI>), writes
// subnet.env for the CNI plugin, keeps the backends' peers in step with the cluster (on every
// change and by a periodic reconcile that also repairs kernel drift), serves health, status and
// metrics, swaps backends on SIGHUP, and leaves cleanly on SIGTERM/SIGINT.
import { existsSync, rmSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Logger } from "pino";
import type { Backend, BackendAnnouncement, BackendCounters, BackendPeer, Underlay } from "../backends/backend.js";
import {
  addTotals,
  addTotalsSince,
  type DataplaneCounters,
  type DataplaneTotals,
  withTotals,
} from "../dataplane/dataplane.js";
import { backendOptions, createBackend, overlayDevice } from "../backends/index.js";
import { followUnderlay } from "../backends/underlay-name.js";
import { buildInfo, commitLabel } from "../build-info.js";
import { backendInForce, ignoredKeysMessage, parseNetConf, type NetConf } from "../config/net-conf.js";
import { ControlPlane } from "../control/control-plane.js";
import type { Keyring } from "../control/gossip/keyring.js";
import type { JoinStatus } from "../control/join.js";
import { NO_BACKEND } from "../control/node-record.js";
import type { Addr } from "../control/runtime.js";
import { isWeftError, WeftError } from "../errors.js";
import { type BatchFailure, Kernel } from "../kernel/iproute.js";
import { removeFlannelMasq } from "../kernel/flannel-masq.js";
import { IPMASQ_TABLE, removeIpMasq, syncIpMasq } from "../kernel/ipmasq.js";
import { removeStalePodGateways } from "../kernel/pod-addresses.js";
import { removeStaleOverlayDevices } from "../kernel/stale-devices.js";
import { removeStaleGatewayRoutes } from "../kernel/stale-routes.js";
import { formatAddr, formatAnyPrefix, formatHostPort, type IpPrefix } from "../net/ip.js";
import { formatIpv4, formatPrefix, type Ipv4Prefix } from "../net/ipv4.js";
import { formatIpv6, formatPrefix6, ipv4Mapped, type Ipv6Prefix } from "../net/ipv6.js";
import { SerialQueue } from "../util/serial.js";
import { AgentHttp, SOCKET_NAME, type TcpListener } from "./http.js";
import type { AgentKeys } from "./keys.js";
import { agentMetrics } from "./metrics.js";
import { PeerSync } from "./peer-sync.js";
import { checkFlags, checkHost } from "./preflight.js";
import { udpSocketDrops, withSums, type DataplanePort, type SocketDrops } from "./socket-drops.js";
import { StateDirLock } from "./state-dir.js";
import { parseSubnetEnv, subnetFileError, writeSubnetEnv } from "./subnet-env.js";
import {
  chooseUnderlay,
  describeUnderlay,
  gossipHost,
  saveUnderlay6,
  UnderlayAddressWatch,
  type UnderlayFamilies,
} from "./underlay.js";

/** The underlay families a net config needs: wasm-vxlan carries IPv6 over the IPv4 underlay where
 *  there is no IPv6 one (dual-stack), or where the node has no IPv6 address or is given --public-ip
 *  (IPv6-only). */
function underlayFamilies(conf: NetConf): UnderlayFamilies {
  return {
    ipv4: conf.space !== undefined,
    ipv6:
      conf.space6 !== undefined && (conf.Backend.Type !== "wasm-vxlan" ? true : conf.space ? "if-present" : "or-ipv4"),
  };
}

export interface AgentOptions {
  netConfig: string;
  iface?: string[];
  ifaceRegex?: string[];
  publicIp?: string;
  publicIpv6?: string;
  subnetFile: string;
  ipMasq: boolean;
  healthzIp: string;
  healthzPort?: number;
  /** Also serve /status on the healthz port (it shows members, underlay addresses and MACs). */
  healthzStatus?: boolean;
  metricsIp: string;
  metricsPort?: number;
  gossipPort: number;
  join: Addr[];
  /** Initial owners of the subnet space; default: this node alone when --join is empty. */
  seeds?: string[];
  keyFile: string;
  stateDir: string;
  nodeName: string;
  keepOnExit: boolean;
  reconcileIntervalMs: number;
  /** Lines the log dropped (the CLI's stdout writer counts them), for /metrics; absent: none. */
  logLinesDropped?: () => number;
}

/** The phase whose reason the lease layer knows (its last wait or failure). */
const WAITING_FOR_LEASE = "waiting for a subnet lease";

/** Waits before a failed backend's lane is started again after a start (or its publish) that failed: doubling, back to min once one runs. */
const RESTART_BACKOFF_MS = { min: 1000, max: 30_000 };

/**
 * A backend that fails within this long of its restart after a failure died young: its next
 * restart waits for a backoff instead of running at once, as a backend whose workers die at every
 * start (8 deaths take ~1.3 s) flapped the node ready and not ready every ~2 s for ever. A minute,
 * as the dataplane counts a worker healthy after a minute without a death: one that served that
 * long failed anew, and is restarted at once.
 */
const YOUNG_FAILURE_MS = 60_000;

/** AGENT_COUNTERS_LOST's consequence, for counts a running backend showed. */
const COUNTS_FALL =
  "what it counted is missing from the totals since the agent started (those counters fall, as at a reset)";
/** For a failed start's, never shown (it never ran in its lane). */
const COUNTS_UNSHOWN =
  "what it counted is missing from the totals since the agent started (never shown: nothing falls)";

/** One address family's side of the node: its lease, the backend instance carrying it, and the
 *  peer sync that keeps that instance's peers equal to the control plane's peers of the family. */
interface Lane {
  readonly family: 4 | 6;
  readonly sync: PeerSync;
  subnet?: IpPrefix;
  backend?: Backend;
  announcement?: BackendAnnouncement;
  /** Why its backend stopped carrying traffic by itself, until a new instance runs (restartFailed). */
  failed?: Error;
  /** The backend that reported `failed` (onFailed): its own startLane must not clear it. */
  failedBy?: Backend;
  /** The backend startLane is starting, not yet in `backend`: a failure it reports is the lane's already. */
  starting?: Backend;
  /** Backends of this lane replaced after such a failure (weft_backend_restarts_total). */
  restarts: number;
  /** When (performance.now()) its running backend was started in place of a failed one; undefined if by a start or a swap. */
  restartedAt?: number;
  /** Its backends that failed in a row within YOUNG_FAILURE_MS of their restart: the wait before the next doubles with each. */
  youngFailures: number;
  /** Dataplane counters of its userspace backends stopped so far, added to the running one's (dataplaneCounters). */
  dataplaneBase?: DataplaneTotals;
  /** Each peer's run as the last peer sync was told it, whose per-peer counts dataplaneBase holds (keepPeerTotals). */
  peerRuns: ReadonlyMap<string, number | undefined>;
  /** Workers of its last backend's dataplane, if that was a userspace one: all down while no backend runs. */
  dataplaneWorkers?: number;
  /** Kernel drops on the sockets of those dataplanes, closed with them (socketDrops). */
  socketDropsBase: number;
}

/** A userspace backend's dataplane sockets, as udpSocketDrops takes them. */
function dataplanePort(family: 4 | 6, backend: Backend): DataplanePort | undefined {
  const sockets = backend.dataplaneSockets?.();
  return sockets && { family, port: sockets.port, socketFamily: sockets.family };
}

function sumCounters(a: BackendCounters, c: BackendCounters): BackendCounters {
  return {
    kernelCommands: a.kernelCommands + c.kernelCommands,
    kernelErrors: a.kernelErrors + c.kernelErrors,
    peersUnreachable: a.peersUnreachable + c.peersUnreachable,
    driftRepairs: a.driftRepairs + c.driftRepairs,
  };
}

/** How long after a removal that found flannel's masquerade rules the reconcile looks for them again. */
const FLANNEL_MASQ_WATCH_MS = 10 * 60_000;

/** A pod network and the length of its node subnets, as gateway routes to them are found. */
interface PodSpace {
  network: IpPrefix;
  subnetLen: number;
}

export class Agent {
  /** One lane per enabled family, IPv4 first. */
  private readonly lanes: Lane[];
  private ready = false;
  /** stop() began: backend changes queued from now on do nothing, and their failures are no fatal. */
  private stopping = false;
  /** The stop under way: a second caller (a signal during a fatal stop) waits for it instead of running another. */
  private stopRun?: Promise<void>;
  /** A backend's stop failed in this run (a swap's, a failed backend's): what it left is no lane's, and a stop sweeps for it. */
  private stopFailed = false;
  /** Pod networks a subnet.env found at start named that this config has not (a family switched off across a kept restart): swept once, by the start's. */
  private droppedSpaces: PodSpace[] = [];
  /** Set once start() holds every family's lease, as it programs them; before, a lost subnet is only forgotten (lostBeforeStart). */
  private started = false;
  /** A periodic reconcile waits on the backend-change queue: no second one queues behind it. */
  private reconcileQueued = false;
  /** Errors backends reported themselves failed with (onFailed): a reconcile that rejects with one is not tried again, the backend is replaced. */
  private readonly backendFailures = new WeakSet<Error>();
  /** Subnets lost and leased anew, logged (AGENT_SUBNET_REPLACED) once subnet.env names the new ones. */
  private readonly replaced: Array<{ from: string; to: string }> = [];
  /** Until start()'s backends run: a lane that fails then keeps, with --keep-on-exit, what it reused. */
  private firstStart = true;
  private reconcileTimer?: NodeJS.Timeout;
  /**
   * Until when the reconcile looks whether a flanneld still running wrote flannel's masquerade
   * rules again (0: no removal found any): 10 minutes past the last removal that found some, as
   * listing nat on every reconcile costs a node with kube-proxy's thousands of rules for good.
   */
  private flannelMasqUntil = 0;
  private flannelMasqBackWarned = false;
  private flannelMasqFailWarned = false;
  /** The next try to start the lanes whose backend failed, after a try that failed (restartFailed). */
  private restartTimer?: NodeJS.Timeout;
  private restartBackoffMs = RESTART_BACKOFF_MS.min;
  /** A restart's publish failed: the next try publishes even with no lane down (publishFailed). */
  private publishDue = false;
  /** Kernel programming of the backend instances stopped so far (counters()). */
  private stoppedCounters: BackendCounters = {
    kernelCommands: 0,
    kernelErrors: 0,
    peersUnreachable: 0,
    driftRepairs: 0,
  };
  private http?: AgentHttp;
  private readonly backendChanges = new SerialQueue();
  private waitingFor = "joining the cluster";
  private readonly startedAt = Date.now();
  private fatalHandler?: (err: Error) => void;
  private fatalError?: Error;
  /** Aborted by fatal(): a start waiting for a lease ends then, instead of waiting on in a name that is taken. */
  private readonly fatalAbort = new AbortController();
  /** Called once an underlay address peers send to changed (UnderlayAddressWatch). */
  private underlayChangedHandler?: () => void;
  private underlayChanged = false;
  private readonly underlayWatch: UnderlayAddressWatch;

  private constructor(
    private readonly opts: AgentOptions,
    private conf: NetConf,
    private readonly kernel: Kernel,
    private readonly underlay: Underlay,
    private readonly control: ControlPlane,
    private readonly keyring: Keyring,
    private readonly lock: StateDirLock,
    private readonly log: Logger,
  ) {
    // The start's own choice, unlogged, with the net config as it is now (a SIGHUP may have swapped the backend);
    // not waiting for a saved IPv6 address's DAD, which would hold the serial queue (reloads, stop) 5 s a round.
    this.underlayWatch = new UnderlayAddressWatch(
      kernel,
      underlay,
      opts,
      () => chooseUnderlay(kernel, opts, underlayFamilies(this.conf), { stateDir: opts.stateDir, waitDad: false }),
      log,
    );
    this.lanes = [];
    if (conf.space) {
      const lane: Lane = {
        family: 4,
        restarts: 0,
        youngFailures: 0,
        socketDropsBase: 0,
        sync: new PeerSync(
          () => control.peers(),
          () => lane.backend,
          log,
          (peers) => this.keepPeerTotals(lane, peers),
        ),
        peerRuns: new Map(),
      };
      this.lanes.push(lane);
    }
    if (conf.space6) {
      const lane: Lane = {
        family: 6,
        restarts: 0,
        youngFailures: 0,
        socketDropsBase: 0,
        sync: new PeerSync(
          () => control.peers6(),
          () => lane.backend,
          log.child({ family: 6 }),
          (peers) => this.keepPeerTotals(lane, peers),
        ),
        peerRuns: new Map(),
      };
      this.lanes.push(lane);
    }
  }

  private lane(family: 4 | 6): Lane | undefined {
    return this.lanes.find((l) => l.family === family);
  }

  /**
   * Everything up to a programmed backend; on failure undoes what it did and throws. Flags,
   * net-conf.json and the host are checked before anything is leased, bound or touched. An abort
   * (SIGTERM, SIGINT) at any point undoes the same way and throws AGENT_STOPPED.
   */
  static async start(opts: AgentOptions, log: Logger, keys: AgentKeys, signal?: AbortSignal): Promise<Agent> {
    checkFlags(opts);
    const conf = await readNetConf(opts.netConfig);
    logIgnoredKeys(conf, opts.netConfig, log);
    const keyring = await keys.load();
    const kernel = new Kernel();
    const lock = await StateDirLock.acquire(opts.stateDir);
    let control: ControlPlane;
    let underlay: Underlay;
    try {
      underlay = await chooseUnderlay(kernel, opts, underlayFamilies(conf), { log, stateDir: opts.stateDir });
      await checkHost(kernel, opts, conf, underlay);
      await mkdir(dirname(opts.subnetFile), { recursive: true, mode: 0o755 }).catch((cause) => {
        throw subnetFileError(opts.subnetFile, `make its directory ${dirname(opts.subnetFile)}`, cause);
      });
      abortable(signal);
      log.info(
        {
          underlay: describeUnderlay(underlay),
          backend: conf.Backend.Type,
          network: conf.space && conf.Network,
          network6: conf.space6 && conf.IPv6Network,
        },
        "starting",
      );
      control = await ControlPlane.start({
        name: opts.nodeName,
        bindAddr: gossipHost(underlay),
        gossipPort: opts.gossipPort,
        join: opts.join,
        seeds: opts.seeds ?? (opts.join.length === 0 ? [opts.nodeName] : []),
        space: conf.space,
        space6: conf.space6,
        // Without an IPv6 underlay address, the IPv4 one (mapped) is what IPv6 peers send to.
        underlay6: conf.space6 && (underlay.addr6 ?? ipv4Mapped(underlay.addr!)),
        keyring,
        stateDir: opts.stateDir,
        logger: log,
      });
    } catch (err) {
      await lock.release();
      throw err;
    }
    const agent = new Agent(opts, conf, kernel, underlay, control, keyring, lock, log);
    control.on("fatal", (err) => agent.fatal(err));
    // Before any await, so that no loss goes unheard (one while subnet.env is read below is also
    // caught there: it compares with the leases held after the read). A loss's backend work is
    // serialized with reloads: a swap and a lost subnet never interleave.
    control.on("lost", (lost) => {
      // Before start() programs anything, it only forgets the subnet (at once, not behind start's
      // own task, which would program it first) and leases the family again itself.
      if (!agent.started) return agent.lostBeforeStart(lost.subnet);
      void agent.subnetLost(lost.subnet).catch((err) => {
        // A stop rejects the wait for the new lease: that is the stop, not a failure.
        if (!agent.stopping) agent.fatal(err);
      });
    });
    try {
      // Gossip is bound to (or announces) it now: a later start at another address would meet this incarnation.
      await saveUnderlay6(opts.stateDir, underlay, opts, log);
      await agent.removeStaleSubnetEnv();
    } catch (err) {
      await agent.stop(false).catch(() => undefined);
      throw err;
    }
    // From here on a fatal error (the name found taken after joining) ends the start as a signal does.
    const ended = AbortSignal.any([...(signal ? [signal] : []), agent.fatalAbort.signal]);
    try {
      abortable(ended);
      const tcp: TcpListener[] = [];
      // Said at start: a probe against the port (the DaemonSet's) would otherwise fail with nothing logged.
      if (opts.healthzPort === undefined)
        log[opts.healthzStatus ? "warn" : "info"](
          { code: "AGENT_HEALTHZ_OFF" },
          `no TCP port for /healthz and /readyz (--healthz-port unset or 0): they answer on weft.sock only, so an HTTP probe against a TCP port (the DaemonSet's liveness and readiness probes) fails; set --healthz-port, or remove such probes${opts.healthzStatus ? "; --healthz-status does nothing without it" : ""}`,
        );
      else
        tcp.push({
          host: opts.healthzIp,
          port: opts.healthzPort,
          endpoints: ["/healthz", "/readyz", ...(opts.healthzStatus ? (["/status"] as const) : [])],
        });
      if (opts.metricsPort === undefined)
        log.info(
          { code: "AGENT_METRICS_OFF" },
          "no TCP port for /metrics (--metrics-port unset or 0): it answers on weft.sock only, so a Prometheus scrape of a TCP port fails; set --metrics-port to scrape it",
        );
      else tcp.push({ host: opts.metricsIp, port: opts.metricsPort, endpoints: ["/metrics"] });
      agent.http = await AgentHttp.listen(
        {
          ready: () => agent.isReady(),
          waitingFor: () => agent.whyNotReady(),
          status: () => agent.status(),
          metrics: agentMetrics(
            control,
            () =>
              agent.lanes.flatMap((l) =>
                l.backend || l.dataplaneBase
                  ? [
                      {
                        family: l.family,
                        backend: l.backend,
                        dataplaneBase: l.dataplaneBase,
                        workersDown: l.backend ? undefined : l.dataplaneWorkers,
                      },
                    ]
                  : [],
              ),
            () => agent.counters(),
            () => agent.subnets(),
            () => agent.socketDrops(),
            {
              ready: () => agent.isReady(),
              backendRestarts: () => agent.lanes.map((l) => ({ family: l.family, restarts: l.restarts })),
              logLinesDropped: () => opts.logLinesDropped?.() ?? 0,
              httpRefused: () => agent.http?.refused,
            },
          ),
          reclaim: (node) => control.reclaim(node),
        },
        join(opts.stateDir, SOCKET_NAME),
        tcp,
        log,
      );
      // Nothing is programmed and no subnet.env written before this node reached its cluster: a
      // node whose join targets never answered would otherwise serve pods nobody can reach.
      if (!control.hasReachedCluster())
        log.info({ join: control.joinStatus().targets }, "waiting to reach a join target before programming anything");
      agent.waitingFor = "reaching a join target (weft status: join)";
      await abortable(ended, control.reachedCluster());
      // Asked after joining: a subnet the cluster took away meanwhile (this node was reclaimed
      // while down) is never programmed; lease() then waits for the new one.
      agent.waitingFor = WAITING_FOR_LEASE;
      for (const lane of agent.lanes) lane.subnet = await abortable(ended, agent.leaseOf(lane.family));
      log.info({ subnets: agent.subnets() }, "lease held");
      agent.waitingFor = "starting the backend";
      // Listening before the backend starts: a peer that appears while startBackend's first sync
      // is under way is synced once the backend exists (a kick without a backend does nothing),
      // instead of waiting for the next reconcile.
      control.on("change", () => {
        for (const lane of agent.lanes)
          void lane.sync
            .kick()
            .catch((err) =>
              log.error(
                { err, code: "AGENT_PEER_SYNC_FAILED", family: lane.family },
                `setting the IPv${lane.family} backend's peers after a cluster change failed (see err); the next change or the periodic reconcile tries again`,
              ),
            );
      });
      await agent.serially(async () => {
        // A subnet lost while another lease was awaited is leased again here, until every family
        // holds one at once; the wait is raced with the abort, as nothing is set up yet.
        for (let lane = agent.lanes.find((l) => !l.subnet); lane; lane = agent.lanes.find((l) => !l.subnet)) {
          agent.waitingFor = WAITING_FOR_LEASE;
          lane.subnet = await abortable(ended, agent.leaseOf(lane.family));
        }
        agent.started = true;
        // Not raced with the abort: a backend half set up could not be undone; a stop waits for it.
        await agent.startBackend();
        agent.firstStart = false;
      });
      abortable(ended);
      agent.reconcileTimer = setInterval(() => void agent.reconcile(), opts.reconcileIntervalMs);
      return agent;
    } catch (err) {
      // A leave once the cluster was reached: peers drop at once the routes of a backend already
      // announced, instead of when gossip declares this node dead. None in a name that is taken:
      // it would tell the cluster that the other node left.
      const nameTaken = isWeftError(agent.fatalError, "GOSSIP_NAME_CONFLICT");
      await agent.stop(control.hasReachedCluster() && !nameTaken).catch(() => undefined);
      // The fatal error is why the start ended, not the AGENT_STOPPED of the abort it caused.
      throw agent.fatalError ?? err;
    }
  }

  /**
   * A subnet.env this start finds that does not name exactly the subnets the state dir holds
   * (flannel's, left by the DaemonSet weft replaces; one of an earlier config or state dir) is
   * removed before anything waits for the cluster: the CNI plugin would hand pods addresses of a
   * subnet that may be another node's until this node writes its own. One that names them is kept,
   * so that pods still start during a restart; if the cluster took the subnet away meanwhile, the
   * loss removes it once the join's merge says so (lostBeforeStart).
   */
  private async removeStaleSubnetEnv(): Promise<void> {
    const file = this.opts.subnetFile;
    const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw subnetFileError(file, "read it", err);
    });
    if (text === undefined) return;
    const held = this.control.families.map((l) => l.currentLease()?.subnet);
    let named: string[] | undefined;
    try {
      const env = parseSubnetEnv(text);
      const networks = [env.v4?.network, env.v6?.network].filter((n) => n !== undefined);
      const ours = [this.conf.space?.network, this.conf.space6?.network].filter((n) => n !== undefined);
      // What a kept restart's backends of another network or family left is found by these.
      this.droppedSpaces = [env.v4, env.v6].flatMap((e) =>
        e && !ours.some((n) => formatAnyPrefix(n) === formatAnyPrefix(e.network))
          ? [{ network: e.network, subnetLen: e.subnet.len }]
          : [],
      );
      // The config's networks, each with the subnet this node holds in it, and nothing else.
      if (networks.length === ours.length && networks.every((n, i) => formatAnyPrefix(n) === formatAnyPrefix(ours[i])))
        named = [env.v4?.subnet, env.v6?.subnet].filter((n) => n !== undefined).map(formatAnyPrefix);
    } catch {
      // not a subnet.env we can read: not ours
    }
    if (named && named.length === held.length && named.every((n, i) => n === held[i])) return;
    await rm(file, { force: true });
    this.log.warn(
      { code: "AGENT_STALE_SUBNET_ENV", file, held: held.filter((h) => h !== undefined) },
      `removed ${file}, which did not name the subnets this node holds (left by flannel, or by an earlier config or state dir): pods started before this node is ready wait for the new one (the CNI plugin says try again)`,
    );
  }

  /** Waits for this node's subnet of a family. */
  private async leaseOf(family: 4 | 6): Promise<IpPrefix> {
    return family === 4 ? this.control.lease() : this.control.lease6();
  }

  /** The pod network of a family (flannel's Network or IPv6Network). */
  private network(family: 4 | 6): IpPrefix {
    return family === 4 ? this.conf.space!.network : this.conf.space6!.network;
  }

  /** This node's subnets, one per enabled family that holds one (IPv4 first). */
  private subnets(): string[] {
    return this.lanes.flatMap((l) => (l.subnet ? [formatAnyPrefix(l.subnet)] : []));
  }

  /** Creates and starts the backend of the current config for every family, announces them, writes subnet.env. */
  private async startBackend(): Promise<void> {
    await this.removeStaleDevices();
    await this.removeFlannelMasq();
    // A lane waiting for a new subnet after a loss is started once it has one (startLeased); so is
    // one whose loss's task is queued behind this swap: before, the swap programmed and announced
    // the lost subnet until that task ran.
    for (const lane of this.lanes) if (this.holds(lane)) await this.startLane(lane);
    await this.publish();
  }

  /**
   * Removes overlay devices no family's backend of this config uses (a kept or flannel's device of
   * another backend), and what a kept restart's backends left of a pod network this config has not
   * (a family switched off: its device, and host-gw's or DirectRouting's gateway routes).
   */
  private async removeStaleDevices(): Promise<void> {
    const options = backendOptions(this.conf.Backend);
    const keep = new Set(this.lanes.flatMap((l) => overlayDevice(this.conf.Backend.Type, options, l.family) ?? []));
    // Once, at the start: a swap's or rollback's start runs this again, and a gateway route put in
    // a dropped network since (an admin's) is not a kept restart's.
    const dropped = this.droppedSpaces;
    this.droppedSpaces = [];
    await this.removeLeftovers(
      [...this.lanes.map((l) => this.network(l.family)), ...dropped.map((s) => s.network)],
      keep,
      dropped,
      `the ${this.conf.Backend.Type} backend of this config does not use (kept from an earlier backend, network or family, or flannel's)`,
    );
  }

  /**
   * Removes the overlay devices of `networks` not in `keep`, and on the underlay interface the
   * gateway routes to node subnets of `routed` (host-gw's, DirectRouting's: no device takes them
   * along), `whose` saying whose they were. Each is logged; false if the kernel refused any.
   */
  private async removeLeftovers(
    networks: IpPrefix[],
    keep: ReadonlySet<string>,
    routed: readonly PodSpace[],
    whose: string,
  ): Promise<boolean> {
    const devices = await removeStaleOverlayDevices(this.kernel, keep, networks);
    for (const dev of devices.removed)
      this.log.warn({ code: "AGENT_STALE_DEVICE", dev }, `removed ${dev}, an overlay device ${whose}, with its routes`);
    const failures: Array<BatchFailure & { code: string }> = devices.failures.map((f) => ({
      ...f,
      code: "AGENT_STALE_DEVICE",
    }));
    // Named by the underlay interface's current name (a failed backend's sweep may come after a rename).
    if (routed.length > 0) await followUnderlay(this.kernel, this.underlay, this.log);
    for (const space of routed) {
      // The subnet length alone: an old run's routes (weft's, a migrated flannel's) are as long as
      // the subnets it held, and a longer one there is an admin's.
      const routes = await removeStaleGatewayRoutes(this.kernel, space.network, space.subnetLen, this.underlay.iface, {
        longer: false,
      });
      for (const r of routes.removed) {
        const [dst, via] = [formatAnyPrefix(r.dst), formatAddr(r.gateway!)];
        this.log.warn(
          { code: "AGENT_STALE_ROUTE", dst, via, dev: r.dev },
          `removed the route to ${dst} via ${via}, a node subnet's gateway route ${whose}`,
        );
      }
      failures.push(...routes.failures.map((f) => ({ ...f, code: "AGENT_STALE_ROUTE" })));
    }
    for (const f of failures)
      this.log.warn(
        { code: f.code, command: f.command },
        // A route not removed as the default gateways were unknown may be an admin's.
        `could not remove what a backend left: ${f.message}; remove it by hand (ip link del, ip route del)${f.code === "AGENT_STALE_ROUTE" ? " if it is weft's or flannel's" : ""}`,
      );
    return failures.length === 0;
  }

  /**
   * Removes flannel's masquerade rules of this config's networks, which would SNAT this node's pods
   * on their way to other nodes; `again` (the periodic reconcile, only where a removal found some)
   * says whether they came back.
   */
  private async removeFlannelMasq(again = false): Promise<void> {
    const stale = await removeFlannelMasq(
      this.kernel,
      this.lanes.map((l) => this.network(l.family)),
    );
    if (stale.kept.length > 0 && !again)
      this.log.debug({ kept: stale.kept }, "left flannel's masquerade rules of another network (another flanneld's)");
    if (stale.removed.length > 0 && again && !this.flannelMasqBackWarned) {
      // Removed again each time: once flanneld stops, what it wrote last must not stay.
      this.flannelMasqBackWarned = true;
      this.log.warn(
        { code: "AGENT_FLANNEL_MASQ_BACK", removed: stale.removed },
        "flannel's masquerade rules came back after weft removed them: is flanneld still running? stop kube-flannel first (delete its DaemonSet and wait until its pods are gone); they are removed again whenever they come back within 10 minutes of the last removal, but until then pods' traffic to other nodes may leave with the node's address",
      );
    } else if (stale.removed.length > 0 && again)
      this.log.debug({ removed: stale.removed }, "removed flannel's masquerade rules again");
    else if (stale.removed.length > 0)
      this.log.warn(
        { code: "AGENT_STALE_FLANNEL_MASQ", removed: stale.removed },
        "removed flannel's masquerade rules, which masqueraded pod traffic between nodes outside flannel's old subnet",
      );
    // A monotonic clock: a step of the wall clock at boot (NTP) must not end or stretch the window.
    if (stale.removed.length > 0) this.flannelMasqUntil = performance.now() + FLANNEL_MASQ_WATCH_MS;
    for (const f of stale.failures) {
      // Within the window too, once: rules flanneld wrote again that cannot be removed must be said.
      const warn = !again || !this.flannelMasqFailWarned;
      if (again) this.flannelMasqFailWarned = true;
      this.log[warn ? "warn" : "debug"](
        { code: "AGENT_STALE_FLANNEL_MASQ", command: f.command },
        `could not remove flannel's masquerade rules: ${f.message}; remove them by hand, or pods' traffic to other nodes leaves with the node's address`,
      );
    }
  }

  /**
   * Starts one family's instance of the configured backend (for IPv6 under vxlan that is
   * flannel-v6.<VNI>, as flannel runs one device per family) and gives it every peer of the family.
   */
  private async startLane(lane: Lane): Promise<void> {
    const afterFailure = lane.failed !== undefined;
    const backend: Backend = createBackend(this.conf.Backend.Type, backendOptions(this.conf.Backend), {
      kernel: this.kernel,
      network: this.network(lane.family),
      subnet: lane.subnet!,
      underlay: this.underlay,
      stateDir: this.opts.stateDir,
      logger: this.log.child({ layer: "backend", ...(lane.family === 6 && { family: 6 }) }),
      onFailed: (err) => this.backendFailed(lane, backend, err),
    });
    lane.starting = backend;
    try {
      lane.announcement = await backend.start();
    } catch (err) {
      // Never in a lane, so stopLane never takes its counters: its failed start is counted here.
      this.retireCounters(lane, backend, false);
      throw err;
    } finally {
      lane.starting = undefined;
    }
    lane.backend = backend;
    try {
      lane.sync.reset();
      await lane.sync.kick();
      await backend.reconcile();
    } catch (err) {
      // Half started (its peers not set): stopped again, so that the lane reads as down and a
      // retry starts it whole. Left running, a retry found nothing down and never published.
      // A first start with --keep-on-exit keeps what it reused: the stop that follows keeps it too.
      await this.stopLaneOrLog(
        lane,
        this.opts.keepOnExit && this.firstStart,
        `stopping the IPv${lane.family} backend that failed to start failed too (see err); what it left goes at the next start, or remove it by hand (ip link show)`,
      );
      throw err;
    }
    lane.restartedAt = afterFailure ? performance.now() : undefined;
    // A failure this backend reported itself (during the peer sync or reconcile above: its device
    // deleted again at once) stays until its queued task replaces it: before, it was cleared here
    // and the publish that follows said ready.
    if (lane.failedBy !== backend) {
      lane.failed = undefined;
      lane.failedBy = undefined;
    }
  }

  /** Announces what every family's backend announces, sets ip-masq, removes stale pod-subnet gateways, writes subnet.env: the node is ready. */
  /** Why a lane with a subnet is not ready: the backend it waits for, and its last failure. */
  private awaitingBackend(lane: Lane): string {
    return `a new IPv${lane.family} ${this.conf.Backend.Type} backend: ${lane.failed?.message ?? "not running"}`;
  }

  /** The families left without a backend, as the waiting texts name them ("IPv4", "IPv6"). */
  private downFamilies(): string[] {
    return this.lanes.filter((l) => !l.backend).map((l) => `IPv${l.family}`);
  }

  private async publish(): Promise<void> {
    // A stop that came while the backend started (a reload, a lost subnet's new one): gossip is
    // down and nothing is to be announced or written; the stop removes what was started.
    if (this.stopping) return;
    const [l4, l6] = [this.lane(4), this.lane(6)];
    this.announceLanes();
    // A family waiting for a new subnet after a loss: its new backend publishes (startLeased).
    const leasing = this.lanes.find((l) => !l.subnet);
    if (leasing) {
      this.waitingFor = this.awaitingLease(leasing);
      return;
    }
    // Ready only with every family running: a family's new backend (a lost subnet's) published
    // beside another that is down said ready, and wrote subnet.env for both. The one that brings
    // the last family up publishes.
    const down = this.lanes.find((l) => l.subnet && (!l.backend || l.failed));
    if (down) {
      this.waitingFor = this.awaitingBackend(down);
      return;
    }
    const held = this.lanes.map((l) => ({ network: this.network(l.family), subnet: l.subnet! }));
    if (this.opts.ipMasq) await syncIpMasq(this.kernel, held);
    else {
      // An earlier run's tables masquerade pods' traffic to other nodes; but a run without ip-masq
      // needs no working nft (nf_tables off, no right to it), so failing to see or drop them warns.
      await removeIpMasq(this.kernel).catch((err) =>
        this.log.warn(
          { err, code: "AGENT_STALE_IP_MASQ" },
          `removing weft's ip-masq rules an earlier run with --ip-masq may have left failed (see err); if there are any, remove them by hand (nft delete table ip ${IPMASQ_TABLE}, and ip6)`,
        ),
      );
    }
    const stale = await removeStalePodGateways(this.kernel, held);
    for (const r of stale.removed) {
      this.log.warn(
        { code: "AGENT_STALE_POD_ADDRESS", dev: r.dev, address: r.address },
        `removed ${r.address} from ${r.dev}: a pod subnet's gateway outside this node's subnet (an earlier subnet's, or flannel's), beside which the bridge plugin would refuse new pods; restart pods still holding addresses of that subnet`,
      );
    }
    for (const f of stale.failures)
      this.log.warn(
        { code: "AGENT_STALE_POD_ADDRESS", command: f.command },
        `could not remove a stale gateway: ${f.message}`,
      );
    const mtu = this.podMtu()!;
    // A subnet lost while this publish's task (a swap, a restart, start's first backend) ran is
    // another node's: subnetLost took subnet.env away at once, and its queued task does the rest.
    if (this.unpublishable()) return;
    await writeSubnetEnv(this.opts.subnetFile, {
      ...(l4 && { v4: { network: this.conf.space!.network, subnet: l4.subnet as Ipv4Prefix } }),
      ...(l6 && { v6: { network: this.conf.space6!.network, subnet: l6.subnet as Ipv6Prefix } }),
      mtu,
      ipMasq: this.opts.ipMasq,
    });
    // Lost during the write: the removal may have come before the file was renamed into place.
    if (this.unpublishable()) {
      await rm(this.opts.subnetFile, { force: true });
      return;
    }
    // A stop or a fatal error during the awaits above said not ready: that stays (stop() removes the
    // file). So does a backend that failed meanwhile (backendFailed): its queued task replaces it.
    if (this.stopping || this.fatalError || this.lanes.some((l) => l.failed)) return;
    this.ready = true;
    this.publishDue = false;
    for (const { from, to } of this.replaced.splice(0))
      this.log.warn({ code: "AGENT_SUBNET_REPLACED", from, to }, `now serving ${to} instead of ${from}`);
    // Whatever brought the node back (a retry, a SIGHUP), the next failure starts at the short wait.
    clearTimeout(this.restartTimer);
    this.restartBackoffMs = RESTART_BACKOFF_MS.min;
    this.log.info(
      {
        backend: this.conf.Backend.Type,
        mtu,
        subnetFile: this.opts.subnetFile,
        ...Object.fromEntries(this.lanes.map((l) => [l.family === 4 ? "peers" : "peers6", l.sync.size])),
      },
      "ready",
    );
  }

  /**
   * Announces each family's running backend, and NO_BACKEND for a family left without one, so that
   * peers drop their routes to this node for it, as for a node that left, instead of sending its
   * pods' traffic into nothing, until a backend runs again and publish() announces it. Nothing once
   * stopping: gossip is going, and a leave (or --keep-on-exit's kept devices) decides what peers keep.
   */
  private announceLanes(): void {
    if (this.stopping) return;
    const said = (l: Lane | undefined) => l && (l.announcement ?? NO_BACKEND);
    this.control.announce(said(this.lane(4)), said(this.lane(6)));
  }

  /** One pod interface carries every family: it gets the smallest MTU of the running instances. */
  private podMtu(): number | undefined {
    const mtus = this.lanes.flatMap((l) => (l.backend ? [l.backend.mtu] : []));
    return mtus.length > 0 ? Math.min(...mtus) : undefined;
  }

  /**
   * Kernel programming of every family's instance, summed, with that of the instances stopped
   * before (a counter, which must not fall at a backend swap); peersUnreachable is the running ones'.
   */
  private counters(): BackendCounters {
    const all = this.lanes.flatMap((l) => (l.backend ? [l.backend.counters()] : []));
    return all.reduce(sumCounters, this.stoppedCounters);
  }

  /**
   * Re-reads net-conf.json (the key file is AgentKeys'); a changed Backend is swapped in (the node
   * keeps its subnet). Reloads run one at a time.
   */
  reload(): Promise<void> {
    return this.serially(() => this.reloadNow());
  }

  /** Runs backend changes (start, reload, a lost subnet) one at a time, in order; none once stopping (undefined). */
  private serially<T>(task: () => Promise<T>): Promise<T | undefined> {
    return this.backendChanges.run(() => (this.stopping ? undefined : task()));
  }

  /**
   * A family's backend stopped carrying pod traffic by itself (a userspace backend's TUN device was
   * deleted). As a kernel backend's reconcile makes a deleted device again, the lane gets a new
   * instance (device, queues, peers), behind any backend change under way; until it runs the node
   * is not ready. One replaced meanwhile (a reload, a lost subnet) needs nothing. One that failed
   * soon after such a restart (YOUNG_FAILURE_MS) is started again after the restarts' backoff.
   */
  private backendFailed(lane: Lane, backend: Backend, err: Error): void {
    this.backendFailures.add(err);
    const why = `a new IPv${lane.family} ${backend.type} backend: the running one stopped carrying pod traffic (${err.message})`;
    // Not ready at once, as for a lost subnet: the task below may wait behind a reconcile or the
    // other family's restart (seconds), while /readyz and weft_ready said ready with the lane dead.
    // `failed` keeps a publish queued before that task (a SIGHUP's restart) from saying ready again.
    // So for one still starting (its TUN device deleted while start() ran): before, startLane
    // cleared the lane's failure once start() returned, and the publish said ready with it dead.
    if ((lane.backend === backend || lane.starting === backend) && !this.stopping) {
      this.ready = false;
      this.waitingFor = why;
      lane.failed = err;
      lane.failedBy = backend;
    }
    void this.serially(async () => {
      if (lane.backend !== backend) return;
      this.ready = false;
      this.waitingFor = why;
      const young = lane.restartedAt !== undefined && performance.now() - lane.restartedAt < YOUNG_FAILURE_MS;
      lane.youngFailures = young ? lane.youngFailures + 1 : 0;
      // Doubling with each young failure in a row: the publish of each restart in between set the
      // agent's backoff back to its start, and the lane's own count must not be undone by it.
      if (young)
        this.restartBackoffMs = Math.max(
          this.restartBackoffMs,
          Math.min(RESTART_BACKOFF_MS.min * 2 ** (lane.youngFailures - 1), RESTART_BACKOFF_MS.max),
        );
      const wait = young ? this.restartBackoffMs : undefined;
      this.log.error(
        { err, code: "AGENT_BACKEND_FAILED", family: lane.family, ...(young && { retryInMs: wait }) },
        `the IPv${lane.family} ${backend.type} backend stopped carrying pod traffic: this node is not ready until a new one runs; ${young ? `it failed within ${YOUNG_FAILURE_MS / 1000} s of its restart (${lane.youngFailures} in a row): starting it in ${wait} ms (SIGHUP starts it at once)` : "starting it"}`,
      );
      lane.failed = err;
      lane.failedBy = backend;
      lane.restarts++;
      // What a stop leaves (it closes the dataplane's sockets first) must not keep the lane down.
      await this.stopLaneOrLog(
        lane,
        false,
        `stopping the failed IPv${lane.family} backend failed (see err); starting a new one all the same`,
      );
      // Announced as down while it waits: peers drop their routes to it meanwhile.
      if (young) this.retryDown(err);
      else await this.restartFailed();
    }).catch((e) => this.publishFailed(e));
  }

  /**
   * The new backend runs but publishing it failed (subnet.env not written, ip-masq not set: a
   * full or read-only disk, a transient nft failure): tried again with the restarts' backoff, the
   * node not ready meanwhile. Before, it stayed not ready until the agent was restarted.
   */
  private publishFailed(err: unknown): void {
    if (this.stopping) return;
    this.publishDue = true;
    const wait = this.retryRestart();
    this.waitingFor = `publishing the new backend: ${(err as Error).message} (AGENT_PUBLISH_FAILED); trying again`;
    this.log.error(
      { err, code: "AGENT_PUBLISH_FAILED", retryInMs: wait },
      `publishing the new backend failed (writing ${this.opts.subnetFile}, or setting ip-masq): this node is not ready; fix the cause in err, trying again in ${wait} ms`,
    );
  }

  /**
   * A swap left lanes without a backend (its rollback, or its stop, failed), or a backend failed
   * soon after its restart (backendFailed): they are announced
   * as down and started again with the restarts' backoff, then published, as a crash loop under a
   * supervisor would; a cause that passes (a transient failure, a file put back) needs no
   * operator. Returns the wait.
   */
  private retryDown(err: Error): number {
    for (const l of this.lanes) if (!l.backend) l.failed ??= err;
    this.publishDue = true;
    this.announceLanes();
    return this.retryRestart();
  }

  /** Schedules the next restartFailed after the backoff; returns the wait. */
  private retryRestart(): number {
    clearTimeout(this.restartTimer);
    const wait = this.restartBackoffMs;
    this.restartBackoffMs = Math.min(wait * 2, RESTART_BACKOFF_MS.max);
    const timer: NodeJS.Timeout = setTimeout(() => {
      if (this.backendChanges.busy)
        this.log.info(
          { retryInMs: wait },
          "the backend restart is due; it waits for the task under way (a backend change or a reconcile)",
        );
      void this.serially(async () => {
        // A try queued before this one (a SIGHUP's) failed and set the next wait: that stands.
        if (this.restartTimer === timer) await this.restartFailed();
      }).catch((e) => this.publishFailed(e));
    }, wait);
    this.restartTimer = timer;
    return wait;
  }

  /**
   * Starts the lanes whose backend failed and are still down (a reload starts them too), then
   * publishes: the node is ready again. A start that fails is tried again after a backoff, the
   * lane down (and announced so) meanwhile; so is a publish that fails (publishFailed).
   */
  private async restartFailed(): Promise<void> {
    clearTimeout(this.restartTimer);
    // Down: failed, or left so by a failed rollback; a lane waiting for a new lease has no subnet,
    // and one whose loss's task is still queued holds one that is another node's: the loss's task
    // starts it on the new one (startLeased); before, this started and announced the lost one.
    const down = this.lanes.filter((l) => !l.backend && this.holds(l));
    if (down.length === 0 && !this.publishDue) return;
    // Each on its own: one family that keeps failing must not keep the other down.
    const failed: Array<{ family: 4 | 6; err: unknown }> = [];
    for (const lane of down) await this.startLane(lane).catch((err) => failed.push({ family: lane.family, err }));
    // A stop under way removes what was started.
    if (this.stopping) return;
    if (failed.length > 0) {
      this.announceLanes();
      const wait = this.retryRestart();
      this.log.error(
        {
          err: failed[0].err,
          code: "AGENT_BACKEND_RESTART_FAILED",
          families: failed.map((f) => f.family),
          retryInMs: wait,
        },
        `starting the failed backend again failed; this node carries no pod traffic of that family (peers are told), trying again in ${wait} ms (SIGHUP tries at once)`,
      );
      return;
    }
    await this.publish();
    // Only a lane the restart brought back: one whose new backend failed meanwhile (failedBy)
    // stays down, and its queued task logs AGENT_BACKEND_FAILED; before, this said restarted too.
    const back = down.filter((l) => l.backend && !l.failed);
    if (!this.stopping && back.length > 0)
      this.log.warn(
        { code: "AGENT_BACKEND_RESTARTED", families: back.map((l) => l.family) },
        "a new backend runs in place of the failed one",
      );
  }

  /** Called once if this node must not run (its name is taken); the CLI stops it and exits. */
  onFatal(handler: (err: Error) => void): void {
    this.fatalHandler = handler;
    if (this.fatalError) handler(this.fatalError);
  }

  /** Called once if an underlay address peers send to changed (BACKEND_UNDERLAY_ADDRESS_CHANGED): the CLI stops it and exits EXIT_UNDERLAY_CHANGED. */
  onUnderlayChanged(handler: () => void): void {
    this.underlayChangedHandler = handler;
    if (this.underlayChanged) handler();
  }

  private fatal(err: Error): void {
    if (this.fatalError) return;
    this.fatalError = err;
    this.ready = false;
    this.waitingFor = `this node cannot go on running: ${err.message}`;
    // A weft error keeps its own documented code (GOSSIP_NAME_CONFLICT); a system error's code
    // (EISDIR) is no log code: it stays in `err`, and the line is AGENT_FATAL.
    const code = err instanceof WeftError ? err.code : "AGENT_FATAL";
    this.log.error({ err, code }, "this node cannot go on running");
    // The name found taken during a stop that keeps subnet.env (--keep-on-exit): its subnet is the
    // other node's, so the file goes now, as a lost subnet's does (subnetLost), not once gossip
    // has stopped; a failure here is the stop's to log, which removes it again after control.stop().
    if (this.stopping && isWeftError(err, "GOSSIP_NAME_CONFLICT")) {
      try {
        rmSync(this.opts.subnetFile, { force: true });
      } catch {}
    }
    this.fatalAbort.abort(err);
    this.fatalHandler?.(err);
  }

  /** Ready: lease held, backend programmed, subnet.env written, and the cluster reached. */
  isReady(): boolean {
    return this.ready && this.control.hasReachedCluster();
  }

  /**
   * The ring gave this node's subnet of one family to another node (it was reclaimed while this
   * node was cut off, or its state was restored from an old copy). In this order: stop using it
   * (that family's backend instance and its routes go), take subnet.env away so the CNI plugin
   * hands out no address of it, then, with a new subnet, program that family's instance again and
   * write subnet.env. The other family's instance keeps running with its subnet. Pods already
   * running on the old subnet keep addresses that now belong elsewhere: they must be restarted.
   * The wait for the new subnet (hours, if none is free) is outside the backend-change queue: in
   * it, the other family's loss, a failed backend's restart, the reconcile and SIGHUP waited too.
   */
  private async subnetLost(lost: string): Promise<void> {
    // At once, not behind a swap or restart under way (seconds): until the queue gets to the loss,
    // the CNI plugin would hand out addresses of another node's subnet, and the node was ready.
    // publish() writes nothing of a lost subnet meanwhile; the queued task then stops its backend.
    const losing = this.lanes.find((l) => l.subnet && formatAnyPrefix(l.subnet) === lost);
    if (losing) {
      this.ready = false;
      this.waitingFor = this.awaitingLease(losing);
      rmSync(this.opts.subnetFile, { force: true });
    }
    const gone = await this.serially(async () => {
      const lane = this.forgetLost(lost, `removing ${this.opts.subnetFile} and stopping its backend`);
      if (!lane) return undefined;
      // Down but not failed: a swap stopped it and left it to this task (startBackend). Started
      // anew as a running lane is, not as a failed backend's restart (AGENT_BACKEND_RESTARTED).
      const running = lane.backend !== undefined || lane.failed === undefined;
      // subnet.env first: a stop that fails (and makes the agent exit) must not leave it to the CNI plugin.
      await rm(this.opts.subnetFile, { force: true });
      await this.stopLane(lane);
      this.waitingFor = this.awaitingLease(lane);
      return { lane, running };
    });
    if (!gone) return;
    const { lane, running } = gone;
    const subnet = await this.leaseOf(lane.family);
    if (this.stopping) return;
    // Held from now on: a loss of it before the queue gets to it is seen (forgetLost), and a retry
    // or a reload that runs first starts the lane with it.
    lane.subnet = subnet;
    // Said by the publish that writes it to subnet.env: pods are to be restarted from then on.
    this.replaced.push({ from: lost, to: formatAnyPrefix(subnet) });
    await this.serially(() => this.startLeased(lane, subnet, running));
  }

  /** Starts the lane on the subnet leased after a loss (subnetLost), then publishes. */
  private async startLeased(lane: Lane, subnet: IpPrefix, running: boolean): Promise<void> {
    // Lost again meanwhile (that loss's task, queued or not yet, starts it on the next lease), or
    // started by a retry or a reload.
    if (lane.subnet !== subnet || !this.holds(lane) || lane.backend) return;
    if (!running) {
      // Down before (its backend failed, or a reload's rollback did): started with any other
      // family that is down, as a retry would (a retry that ran while it had no subnet skipped it).
      this.waitingFor = this.awaitingBackend(lane);
      return this.restartFailed().catch((err) => this.publishFailed(err));
    }
    // A start or a publish that fails is tried again with backoff, as a failed backend's restart:
    // before, it ended the agent, whose restart had the same cause to face.
    try {
      await this.startLane(lane);
    } catch (err) {
      if (this.stopping) throw err;
      lane.failed = err as Error;
      const wait = this.retryDown(lane.failed);
      this.waitingFor = this.awaitingBackend(lane);
      this.log.error(
        { err, code: "AGENT_BACKEND_RESTART_FAILED", families: [lane.family], retryInMs: wait },
        `starting the backend for the new ${this.subnetWord(lane)} failed; this node carries no pod traffic of that family (peers are told), trying again in ${wait} ms (SIGHUP tries at once)`,
      );
      return;
    }
    await this.publish().catch((err) => this.publishFailed(err));
  }

  /**
   * Whether a lane's subnet is no longer this node's lease (lost, its queued loss not yet run):
   * nothing of it is to be written or called ready. Sets what the node waits for.
   */
  private unpublishable(): boolean {
    const lost = this.lanes.find((l) => !this.holds(l));
    if (lost) this.waitingFor = this.awaitingLease(lost);
    return lost !== undefined;
  }

  /** Whether the lane holds a subnet that is still this node's lease (false too while its loss's task is queued). */
  private holds(lane: Lane): boolean {
    const leases = lane.family === 4 ? this.control.leases4 : this.control.leases6;
    return lane.subnet !== undefined && formatAnyPrefix(lane.subnet) === leases?.currentLease()?.subnet;
  }

  /** Why a lane that lost its subnet is not ready (whyNotReady adds the lease layer's reason). */
  private awaitingLease(lane: Lane): string {
    const what = this.subnetWord(lane);
    return `a new ${what}: the cluster gave this node's ${what} to another node`;
  }

  /** The lane that held `lost`, its subnet forgotten and the loss logged; undefined if none held it. */
  private forgetLost(lost: string, doing: string): Lane | undefined {
    const lane = this.lanes.find((l) => l.subnet && formatAnyPrefix(l.subnet) === lost);
    if (!lane) return undefined;
    const what = this.subnetWord(lane);
    this.log.error(
      { code: "AGENT_SUBNET_LOST", subnet: lost },
      `the cluster gave this node's ${what} ${lost} to another node: ${doing}; restart this node's pods once it has a new subnet`,
    );
    lane.subnet = undefined;
    this.ready = false;
    return lane;
  }

  /** "subnet", or "IPv6 subnet" when the node has two families. */
  private subnetWord(lane: Lane): string {
    return this.lanes.length > 1 ? `IPv${lane.family} subnet` : "subnet";
  }

  /**
   * Lost before start() programmed anything (while it waited for another family's lease): nothing
   * runs on it and subnet.env is not written yet; start() leases the family again before it
   * programs. Waiting for the new lease in the backend-change queue instead held start() behind it,
   * where a stop could not reach it while no subnet was free.
   */
  private lostBeforeStart(lost: string): void {
    // Nothing is published before start() programs, so a subnet.env here is the one a restart kept
    // (it named the saved subnets, this one among them): it goes at once, or pods would get the
    // new owner's addresses. Lost in the join's first merge, no lane holds the subnet yet.
    const file = this.opts.subnetFile;
    if (existsSync(file)) {
      try {
        rmSync(file, { force: true });
      } catch (err) {
        // Fatal, as once started (subnetLost): the CNI plugin would go on handing out the new
        // owner's addresses. Not thrown: it ran into the lease layer's commit, which it cut short.
        this.fatal(err as Error);
        return;
      }
      this.log.warn(
        { code: "AGENT_STALE_SUBNET_ENV", file, subnet: lost },
        `removed ${file}: it named ${lost}, which the cluster gave to another node while this node was down; pods started before this node is ready wait for the new subnet (the CNI plugin says try again), and pods still on ${lost} must be restarted`,
      );
    }
    this.forgetLost(lost, "leasing another before anything is programmed");
  }

  private async reloadNow(): Promise<void> {
    const next = await readNetConf(this.opts.netConfig);
    // The resolved spaces say it all: a family switched on or off, or its network keys changed.
    if (
      next.space?.fingerprint !== this.conf.space?.fingerprint ||
      next.space6?.fingerprint !== this.conf.space6?.fingerprint
    ) {
      throw new WeftError(
        "CONFIG_NET_CONF_RELOAD_REFUSED",
        "Network and subnet keys cannot change while running; stop every agent to change them",
      );
    }
    logIgnoredKeys(next, this.opts.netConfig, this.log);
    const inForce = (c: NetConf) => JSON.stringify(backendInForce(c.Backend));
    // A family without a backend (a failed restart, a swap whose rollback failed) is started again
    // by any reload, the same config included: that is how an operator retries. With the same
    // config, only the families that are down: a swap stopped the running one too, and if the down
    // one failed again, its rollback logged a failed swap nobody asked for. Down as restartFailed
    // counts it: a lane whose loss's task is queued is that task's to start.
    const down = this.lanes.some((l) => !l.backend && this.holds(l));
    if (inForce(next) === inForce(this.conf)) {
      this.log.info(
        { backend: next.Backend.Type },
        down
          ? "reloaded: the backend in force is the same; starting it again for the families without one"
          : "reloaded: the backend in force is the same, nothing to swap",
      );
      // A publish left to retry (a rollback's that failed) is retried at once too, as its log says.
      if (down || this.publishDue) await this.restartFailed().catch((err) => this.publishFailed(err));
      return;
    }
    const prev = this.conf;
    this.log.info({ from: prev.Backend.Type, to: next.Backend.Type }, "swapping backend");
    try {
      await this.stopBackend();
    } catch (err) {
      if (this.stopping) throw err;
      // Lanes it stopped are down, the config in force unchanged: as after a failed rollback.
      const wait = this.retryDown(err as Error);
      const down = this.downFamilies();
      this.waitingFor = `no backend for ${down.join(" and ")}: stopping the ${prev.Backend.Type} backend for the swap failed (AGENT_SWAP_STOP_FAILED); started again in ${wait} ms and after, or send SIGHUP to try at once`;
      throw new WeftError(
        "AGENT_SWAP_STOP_FAILED",
        `stopping the ${prev.Backend.Type} backend for the swap to ${next.Backend.Type} failed (${(err as Error).message}): this node may carry no pod traffic now; the ${prev.Backend.Type} backend is started again in ${wait} ms and after (1 s doubling to 30 s), or send SIGHUP to try the swap again`,
      );
    }
    // The swap starts every lane and publishes: a pending restart or publish retry is its to do
    // (one left behind a failed rollback would publish beside a lane that is down).
    clearTimeout(this.restartTimer);
    this.publishDue = false;
    this.conf = next;
    try {
      await this.startBackend();
    } catch (err) {
      if (this.stopping) throw err;
      // Never left without a backend: the previous one worked, so it comes back.
      this.log.error(
        { err, code: "AGENT_SWAP_START_FAILED", backend: next.Backend.Type },
        `the ${next.Backend.Type} backend failed to start; going back to ${prev.Backend.Type} (see err): fix the cause, then send SIGHUP to try the swap again`,
      );
      this.conf = prev;
      try {
        await this.stopBackend();
        await this.startBackend();
      } catch (rollback) {
        if (this.stopping) throw rollback;
        // Not "swapping the backend" (stopBackend's word): nothing is under way until a SIGHUP.
        // A dual-stack node may have started one family's backend before the other's failed.
        const down = this.downFamilies();
        const which = down.length > 0 ? `no backend for ${down.join(" and ")}` : "a backend not set up";
        const wait = this.retryDown(rollback as Error);
        this.waitingFor = `${which}: the new one and the way back to the old one failed to start (AGENT_ROLLBACK_FAILED); fix the cause: the way back is tried again in ${wait} ms and after, or send SIGHUP to try at once`;
        throw new WeftError(
          "AGENT_ROLLBACK_FAILED",
          `the ${next.Backend.Type} backend failed to start (${(err as Error).message}), and so did the ${prev.Backend.Type} backend it went back to (${(rollback as Error).message}): this node has ${which} now; the way back is tried again with backoff (1 s doubling to 30 s): fix the cause, or send SIGHUP to try at once (any config, the same one too)`,
        );
      }
      throw err;
    }
  }

  /** Stops and removes every family's backend; peer syncs meanwhile do nothing (startBackend sets every peer). */
  private async stopBackend(): Promise<void> {
    this.ready = false;
    this.waitingFor = "swapping the backend";
    for (const lane of this.lanes) await this.stopLane(lane);
  }

  /**
   * Adds a backend instance leaving for good to stoppedCounters (its unreachable peers are no
   * longer), and its dataplane's to the lane's dataplaneBase: that read, returned, which the read
   * after its stop (settleCounters) completes. `inLane`: it ran in the lane, its counts shown
   * (false: a failed start's, read once, after it stopped).
   */
  private retireCounters(lane: Lane, backend: Backend, inLane: boolean): DataplaneCounters | undefined {
    this.stoppedCounters = sumCounters(this.stoppedCounters, { ...backend.counters(), peersUnreachable: 0 });
    // Read from /proc: a failure (EMFILE) must not keep the backend from its stop, nor replace the
    // error of a failed start. What could not be read goes uncounted.
    try {
      const port = dataplanePort(lane.family, backend);
      if (port) lane.socketDropsBase += udpSocketDrops([port]).drops;
    } catch (err) {
      this.countersLost(lane, "its sockets' kernel drops", inLane ? COUNTS_FALL : COUNTS_UNSHOWN, err);
    }
    const d = this.retiredDataplane(lane, backend, inLane ? "it is read again once stopped" : COUNTS_UNSHOWN);
    if (d) lane.dataplaneBase = addTotals(lane.dataplaneBase, d);
    // One entry per worker. A failed start's says nothing of the workers down: a userspace one's
    // has none left (0), a kernel one's no dataplane; the last backend that ran stays the measure.
    if (inLane) lane.dataplaneWorkers = d?.lastErrno.length;
    return d;
  }

  /**
   * Adds what a retired backend's dataplane counted after its retire read (`before`), up to its
   * workers' stop: read once stopped, when nothing moves any more. Without `before` (that read
   * failed), all it counted.
   */
  private settleCounters(lane: Lane, backend: Backend, before: DataplaneCounters | undefined): void {
    const d = this.retiredDataplane(
      lane,
      backend,
      before ? "what it counted while stopping is missing from the totals (an undercount: nothing falls)" : COUNTS_FALL,
    );
    if (d)
      lane.dataplaneBase = before ? addTotalsSince(lane.dataplaneBase, d, before) : addTotals(lane.dataplaneBase, d);
  }

  /** `lost` says what a failed read leaves out of the totals. */
  private retiredDataplane(lane: Lane, backend: Backend, lost: string): DataplaneCounters | undefined {
    try {
      return backend.dataplaneCounters?.({ peers: true });
    } catch (err) {
      this.countersLost(lane, "its dataplane's counters", lost, err);
    }
  }

  /**
   * A peer's saved dataplane totals go when the backend's peers no longer hold it (it left or died,
   * or its lease or backend went) or hold another run of it (the node restarted, or left and came
   * back, between two syncs): a node that takes its name later starts from 0, as it does in the
   * running dataplane, whose table dropped the peer, or gave the new run a fresh slot.
   */
  private keepPeerTotals(lane: Lane, want: ReadonlyMap<string, BackendPeer>): void {
    const peers = lane.dataplaneBase?.peers ?? {};
    for (const name of Object.keys(peers))
      if (!want.has(name) || want.get(name)!.run !== lane.peerRuns.get(name)) delete peers[name];
    lane.peerRuns = new Map([...want].map(([name, p]) => [name, p.run]));
  }

  private countersLost(lane: Lane, what: string, lost: string, err: unknown): void {
    this.log.warn(
      { err, code: "AGENT_COUNTERS_LOST", family: lane.family },
      `reading ${what} as the IPv${lane.family} backend stopped failed: ${lost}; the stop goes on`,
    );
  }

  /** The running userspace dataplane's counters of a family, with those of its stopped ones added. */
  private dataplaneCounters(lane: Lane | undefined, opts?: { peers?: boolean }): DataplaneCounters | undefined {
    const d = lane?.backend?.dataplaneCounters?.(opts);
    return d && withTotals(d, lane?.dataplaneBase);
  }

  private async stopLane(lane: Lane, keep = false): Promise<void> {
    const backend = lane.backend;
    // Taken as it leaves the lanes, so that the sum stays whole while it stops; what it forwards
    // until its workers stop is added once it stopped (its stop's kernel commands go uncounted).
    const before = backend && this.retireCounters(lane, backend, true);
    lane.backend = undefined;
    lane.announcement = undefined;
    try {
      await backend?.stop(keep).catch((err) => {
        // Out of the lane already: the agent's stop finds what it left by the sweep.
        this.stopFailed = true;
        throw err;
      });
    } finally {
      if (backend) this.settleCounters(lane, backend, before);
    }
  }

  /**
   * stopLane where a failure must not stop the caller (a failed start, a failed backend's
   * restart, the agent's stop): logged as AGENT_BACKEND_STOP_FAILED with `message`, which says
   * what happens next. False when it failed.
   */
  private async stopLaneOrLog(lane: Lane, keep: boolean, message: string): Promise<boolean> {
    try {
      await this.stopLane(lane, keep);
      return true;
    } catch (err) {
      this.log.error({ err, code: "AGENT_BACKEND_STOP_FAILED", family: lane.family }, message);
      return false;
    }
  }

  /** Periodic: peers from the control plane, then kernel drift repaired. */
  private async reconcile(): Promise<void> {
    // On the backend-change queue, so that no swap or restart is under way; a family that runs is
    // repaired while another is down (the node not ready: before, nothing was repaired then,
    // and a failed restart or rollback now leaves the node so for long). One queued at a time.
    if (this.reconcileQueued) return;
    this.reconcileQueued = true;
    await this.serially(async () => {
      this.reconcileQueued = false;
      const running = this.lanes.filter((l) => l.backend);
      // Each family apart: one whose peer sync or reconcile fails leaves the other's repaired.
      const synced = await Promise.allSettled(running.map((l) => l.sync.kick()));
      for (const [i, lane] of running.entries()) {
        const sync = synced[i];
        if (sync.status === "rejected")
          this.log.error(
            { err: sync.reason, code: "AGENT_PEER_SYNC_FAILED", family: lane.family },
            `setting the IPv${lane.family} backend's peers failed (see err); trying again at the next interval`,
          );
        await lane.backend?.reconcile().catch((err) => {
          // AGENT_BACKEND_FAILED says it, and what happens instead; also where the backend failed
          // with another error than this one (the device it repairs gone with it).
          if (!this.backendFailures.has(err) && !lane.failed)
            this.log.error(
              { err, code: "AGENT_RECONCILE_FAILED", family: lane.family },
              `repairing the IPv${lane.family} backend's kernel state failed (see err); trying again at the next interval`,
            );
        });
      }
      // Only where a removal found them: elsewhere the reconcile runs no iptables at all.
      if (performance.now() < this.flannelMasqUntil) await this.removeFlannelMasq(true);
      // After the backends followed a rename. A failed read is the catch below's, tried again next interval.
      if (!this.stopping && !this.underlayChanged && (await this.underlayWatch.changed())) {
        this.underlayChanged = true;
        this.underlayChangedHandler?.();
      }
    }).catch((err) => {
      this.reconcileQueued = false;
      this.log.error(
        { err, code: "AGENT_RECONCILE_FAILED" },
        "reconcile failed (see err); trying again at the next interval",
      );
    });
  }

  /**
   * What `weft status` shows: the node, then the version and commit weft was built from (as
   * `weft --version` and weft_build_info say). IPv4's keys (underlay, network, subnet, peers) are
   * absent or empty while IPv4 is off; IPv6's (underlay6, network6, subnet6, backend6, peers6) are there while
   * IPv6 is on. `backend` is the node's backend announcement (the first family's); `dataplane` the
   * first family's userspace dataplane counters, `dataplane6` the IPv6 one's on a dual-stack node.
   */
  status(): unknown {
    const settings = this.control.settings();
    const [l4, l6] = [this.lane(4), this.lane(6)];
    return {
      node: this.opts.nodeName,
      version: buildInfo().version,
      commit: commitLabel(buildInfo()),
      ...(this.underlay.addr !== undefined && { underlay: formatIpv4(this.underlay.addr) }),
      ...(this.underlay.addr6 !== undefined && { underlay6: formatIpv6(this.underlay.addr6) }),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      ready: this.isReady(),
      waitingFor: this.isReady() ? undefined : this.whyNotReady(),
      join: isoTimes(this.control.joinStatus()),
      ...(l4 && { network: this.conf.Network, subnet: l4.subnet && formatPrefix(l4.subnet as Ipv4Prefix) }),
      ...(l6 && {
        network6: this.conf.IPv6Network,
        subnet6: l6.subnet && formatPrefix6(l6.subnet as Ipv6Prefix),
        backend6: l6.announcement,
      }),
      backend: this.lanes[0].announcement,
      mtu: this.podMtu(),
      // Ids only (hash prefixes), never key material: enough to compare nodes during a rotation.
      gossipKeys: this.keyring.ids(),
      members: this.control.allMembers().map((m) => ({
        name: m.name,
        addr: formatHostPort(m.host, m.port),
        state: m.state,
        incarnation: m.incarnation,
      })),
      peers: this.control.peers().map((p) => ({
        name: p.name,
        subnet: formatPrefix(p.subnet),
        underlay: formatIpv4(p.underlay),
        backend: p.backend.type,
      })),
      ...(l6 && {
        peers6: this.control.peers6().map((p) => ({
          name: p.name,
          subnet: formatPrefix6(p.subnet),
          underlay: formatIpv6(p.underlay),
          backend: p.backend.type,
        })),
      }),
      /** Subnets kept for dead or departed nodes, and when they go back to the ring (weft reclaim hands them back now). */
      reserved: this.control
        .reservations()
        .map((r) => ({ ...r, reclaimAt: r.reclaimAt === null ? null : new Date(r.reclaimAt).toISOString() })),
      // net-conf.json's Backend in force, defaults filled in (wasm-vxlan's IPv6OverIPv4Port, the dataplane's Workers...).
      settings: {
        ...settings,
        reclaimGrace: formatDuration(settings.lease.reclaimGraceMs),
        backend: backendInForce(this.conf.Backend),
      },
      backendCounters: this.counters(),
      dataplane: this.dataplaneCounters(this.lanes[0], { peers: true }),
      // A dual-stack wasm-vxlan node runs a second dataplane for IPv6 (its own device and sockets).
      ...(this.lanes.length > 1 && { dataplane6: this.dataplaneCounters(this.lane(6), { peers: true }) }),
      socketDrops: this.socketDrops(),
    };
  }

  private whyNotReady(): string {
    const atStart = this.waitingFor === WAITING_FOR_LEASE;
    // A family that lost its subnet waits for the lease layer too, whatever another one does meanwhile.
    const lost = this.started && this.lanes.some((l) => !l.subnet);
    const lease = atStart || lost ? this.control.leaseWaitReason() : null;
    if (!lease) return this.waitingFor;
    return atStart ? `${this.waitingFor}: ${lease}` : `${this.waitingFor} (${WAITING_FOR_LEASE}: ${lease})`;
  }

  /** Kernel drops on the userspace dataplane's sockets (kernel backends have none of their own). */
  private socketDrops(): SocketDrops | undefined {
    // Each running dataplane's sockets, as its backend reports them: IPv6 over the IPv4 underlay
    // has a port of its own, on IPv4 sockets. A family whose backend is down (being replaced) does
    // not hide the other's.
    const ports = this.lanes.flatMap((l) => {
      const port = l.backend && dataplanePort(l.family, l.backend);
      return port ? [port] : [];
    });
    const now = ports.length > 0 ? udpSocketDrops(ports).families : [];
    // With the drops of each family's dataplanes stopped before, which went with their sockets; a
    // family with none running now (a swap, a restart's backoff) shows those alone, so that its
    // counter's series stays.
    const families = this.lanes.flatMap((l) => {
      const f =
        now.find((x) => x.family === l.family) ?? (l.dataplaneBase && { family: l.family, sockets: 0, drops: 0 });
      return f ? [{ ...f, drops: f.drops + l.socketDropsBase }] : [];
    });
    return families.length > 0 ? withSums(families) : undefined;
  }

  /**
   * Leaves the cluster and removes what the agent made, subnet.env too. With keepOnExit it keeps
   * its devices and subnet.env and does not leave: a leave makes peers drop their routes to it at once, which a restart (the
   * reason to keep devices) must not do; they keep them, as for a node that may come back, until
   * it is back or gossip declares it dead. Not once its name was found taken (GOSSIP_NAME_CONFLICT):
   * its subnet is the other node's, which the kept subnet.env would have the CNI plugin hand out.
   */
  stop(leave = true): Promise<void> {
    // One stop: a second one ran beside the first, found the lanes the first had taken empty, and
    // exited 0 before the first was done (routes, devices left; a fatal stop's exit code lost).
    this.stopRun ??= this.stopNow(leave);
    return this.stopRun;
  }

  private async stopNow(leave: boolean): Promise<void> {
    this.ready = false;
    // A fatal error's reason stays: it is why the stop came.
    if (!this.fatalError) this.waitingFor = "stopping";
    this.stopping = true;
    const nameTaken = () => isWeftError(this.fatalError, "GOSSIP_NAME_CONFLICT");
    let keep = this.opts.keepOnExit && !nameTaken();
    clearInterval(this.reconcileTimer);
    clearTimeout(this.restartTimer);
    // Without keepOnExit the devices and routes go, so subnet.env goes first: left, it has the CNI
    // plugin call the node ready (STATUS) and give pods addresses (ADD) of a node that has left.
    const removeSubnetEnv = async () => {
      if (!keep)
        await rm(this.opts.subnetFile, { force: true }).catch((err) =>
          this.log.warn(
            { err, code: "AGENT_SUBNET_ENV_REMOVE_FAILED" },
            `removing ${this.opts.subnetFile} failed; remove it by hand`,
          ),
        );
    };
    await removeSubnetEnv();
    await this.control
      .stop(leave && !keep)
      .catch((err) =>
        this.log.warn(
          { err, code: "AGENT_LEAVE_FAILED" },
          "leaving the cluster failed (see err): peers drop this node's routes once gossip declares it dead",
        ),
      );
    // The name found taken while gossip stopped (a join or a name check under way): the subnet is
    // the other node's, so nothing is kept after all, as in a fatal stop. Before, subnet.env stayed
    // and the CNI plugin handed out the other node's addresses.
    if (keep && nameTaken()) {
      keep = false;
      await removeSubnetEnv();
    }
    // A backend change under way (a reload, a lost subnet's new backend) ends first, so that what
    // it starts is stopped below instead of left in the kernel; a publish in it may have written
    // subnet.env again.
    await this.backendChanges.idle();
    await removeSubnetEnv();
    // One family's failure leaves the other family's backend, ip-masq, the socket and the lock to
    // be removed all the same; the stop then says it was incomplete.
    const failed: number[] = [];
    for (const lane of this.lanes) {
      const why = `stopping the IPv${lane.family} backend failed (see err); what it left goes at the next start, or remove it by hand (ip link show)`;
      if (!(await this.stopLaneOrLog(lane, keep, why))) failed.push(lane.family);
    }
    // What a failed stop left (now, or a swap's, a failed backend's earlier: no lane holds those) is
    // found by what it is: this config's overlay devices and gateway routes.
    let complete = true;
    if (this.stopFailed && !keep) {
      const spaces = this.lanes.map((l) => ({
        network: this.network(l.family),
        subnetLen: (l.family === 4 ? this.conf.space : this.conf.space6)!.subnetLen,
      }));
      complete = await this.removeLeftovers(
        spaces.map((s) => s.network),
        new Set(),
        spaces,
        "left by a backend whose stop failed",
      ).catch((err) => {
        this.log.error(
          { err, code: "AGENT_BACKEND_STOP_FAILED" },
          "looking for what a failed backend stop left failed",
        );
        return false;
      });
    }
    // Kept with the devices: pods' traffic out keeps its masquerade until the next start rewrites it.
    if (this.opts.ipMasq && !keep)
      await removeIpMasq(this.kernel).catch((err) =>
        this.log.warn(
          { err, code: "AGENT_IP_MASQ_REMOVE_FAILED" },
          `removing ip-masq rules failed (see err); remove them by hand (nft delete table ip ${IPMASQ_TABLE}, and ip6)`,
        ),
      );
    await this.http?.close();
    await this.lock.release();
    if (failed.length > 0 || !complete)
      throw new WeftError(
        "AGENT_STOP_INCOMPLETE",
        `${failed.length > 0 ? `the IPv${failed.join(" and IPv")} backend` : "what a failed backend stop left"} could not be removed completely (see the errors above): remove what is left by hand (ip link show, ip route show)`,
      );
    this.log.info({ keptDevices: keep }, "stopped");
  }
}

/** The join's times (wall-clock ms) as ISO text, as `reserved`'s reclaimAt. */
function isoTimes({ nextAttemptAt, joinedAt, ...rest }: JoinStatus) {
  const iso = (ms?: number) => (ms === undefined ? undefined : new Date(ms).toISOString());
  return { ...rest, nextAttemptAt: iso(nextAttemptAt), joinedAt: iso(joinedAt) };
}

/** 86400000 → "24h", 90000 → "1m30s". */
function formatDuration(ms: number): string {
  const units: Array<[string, number]> = [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ];
  let left = Math.round(ms / 1000) * 1000;
  let out = "";
  for (const [name, size] of units) {
    if (left >= size && !(name === "d" && left < 2 * size)) {
      out += `${Math.floor(left / size)}${name}`;
      left %= size;
    }
  }
  return out || `${ms}ms`;
}

/** net-conf.json, parsed and checked. */
async function readNetConf(path: string): Promise<NetConf> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new WeftError(
      "CONFIG_NET_CONF_UNREADABLE",
      `cannot read the network config ${path}: ${(cause as Error).message}; pass --net-config PATH`,
      { cause },
    );
  }
  return parseNetConf(text, path);
}

/** Backend keys a config ignores, logged at start and at each reload it passes (never of one refused). */
function logIgnoredKeys(conf: NetConf, path: string, log: Logger): void {
  const ignored = ignoredKeysMessage(conf, path);
  if (ignored) log.warn({ code: "CONFIG_BACKEND_KEY_IGNORED", backend: conf.Backend.Type }, ignored);
}

/**
 * Throws AGENT_STOPPED once `signal` is aborted; with a promise, also rejects when the abort
 * comes while it is pending (the caller then undoes what was done).
 */
function abortable(signal: AbortSignal | undefined): void;
function abortable<T>(signal: AbortSignal | undefined, work: Promise<T>): Promise<T>;
function abortable<T>(signal: AbortSignal | undefined, work?: Promise<T>): Promise<T> | undefined {
  const stopped = () =>
    new WeftError("AGENT_STOPPED", "stopped by a signal while starting; what was set up is removed again");
  if (signal?.aborted) throw stopped();
  if (!work || !signal) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(stopped());
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
