// The node agent: joins the gossip control plane, leases a subnet, programs the backend chosen in
// net-conf.json, writes subnet.env for the CNI plugin, keeps the backend's peers in step with the
// cluster (on every change and by a periodic reconcile that also repairs kernel drift), serves
// health, status and metrics, swaps backends on SIGHUP, and leaves cleanly on SIGTERM/SIGINT.
import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Logger } from "pino";
import type { Backend, BackendAnnouncement, BackendOptions, Underlay } from "../backends/backend.js";
import { createBackend } from "../backends/index.js";
import { parseNetConf, type BackendConfig, type NetConf } from "../config/net-conf.js";
import { ControlPlane } from "../control/control-plane.js";
import { Keyring } from "../control/gossip/keyring.js";
import type { Addr } from "../control/runtime.js";
import { WeftError } from "../errors.js";
import { Kernel } from "../kernel/iproute.js";
import { removeIpMasq, setIpMasq } from "../kernel/ipmasq.js";
import { formatIpv4, formatPrefix, type Ipv4Prefix } from "../net/ipv4.js";
import { formatIpv6, formatPrefix6, type Ipv6Prefix } from "../net/ipv6.js";
import { SerialQueue } from "../util/serial.js";
import { AgentHttp, SOCKET_NAME, type TcpListener } from "./http.js";
import { agentMetrics } from "./metrics.js";
import { PeerSync } from "./peer-sync.js";
import { checkFlags, checkHost } from "./preflight.js";
import { udpSocketDrops, type SocketDrops } from "./socket-drops.js";
import { StateDirLock } from "./state-dir.js";
import { writeSubnetEnv } from "./subnet-env.js";
import { chooseUnderlay, describeUnderlay } from "./underlay.js";

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
}

/** The phase whose reason the lease layer knows (its last wait or failure). */
const WAITING_FOR_LEASE = "waiting for a subnet lease";

/** net-conf.json's Backend keys as the backends take them. */
function backendOptions(b: BackendConfig): BackendOptions {
  switch (b.Type) {
    case "vxlan":
      return { vni: b.VNI, port: b.Port, mtu: b.MTU, directRouting: b.DirectRouting, gbp: b.GBP };
    case "wasm-vxlan":
      return { vni: b.VNI, port: b.Port, workers: b.Workers, offloads: b.Offloads, busyPollUs: b.BusyPollMicros, queueDelayUs: b.QueueDelayMicros };
    case "udp":
      return { port: b.Port, workers: b.Workers, offloads: b.Offloads, busyPollUs: b.BusyPollMicros, queueDelayUs: b.QueueDelayMicros };
    case "host-gw":
      return {};
  }
}

export class Agent {
  private backend?: Backend;
  private announcement?: BackendAnnouncement;
  private subnet?: Ipv4Prefix;
  /** Dual-stack: the IPv6 lease and the backend instance that carries it (kernel backends). */
  private backend6?: Backend;
  private announcement6?: BackendAnnouncement;
  private subnet6?: Ipv6Prefix;
  private ready = false;
  private reconcileTimer?: NodeJS.Timeout;
  private http?: AgentHttp;
  private readonly backendChanges = new SerialQueue();
  private waitingFor = "joining the cluster";
  private readonly startedAt = Date.now();
  private readonly sync: PeerSync;
  private readonly sync6: PeerSync;
  private fatalHandler?: (err: Error) => void;
  private fatalError?: Error;

  private constructor(
    private readonly opts: AgentOptions,
    private conf: Ipv4NetConf,
    private readonly kernel: Kernel,
    private readonly underlay: Underlay,
    private readonly control: ControlPlane,
    private readonly lock: StateDirLock,
    private readonly log: Logger,
  ) {
    this.sync = new PeerSync(() => control.peers(), () => this.backend, log);
    this.sync6 = new PeerSync(() => control.peers6(), () => this.backend6, log.child({ family: 6 }));
  }

  /**
   * Everything up to a programmed backend; on failure undoes what it did and throws. Flags,
   * net-conf.json and the host are checked before anything is leased, bound or touched. An abort
   * (SIGTERM, SIGINT) at any point undoes the same way and throws AGENT_STOPPED.
   */
  static async start(opts: AgentOptions, log: Logger, signal?: AbortSignal): Promise<Agent> {
    checkFlags(opts);
    const conf = requireIpv4(parseNetConf(await readConfig(opts.netConfig), opts.netConfig));
    const keyring = await Keyring.fromKeyFile(opts.keyFile);
    const kernel = new Kernel();
    const lock = await StateDirLock.acquire(opts.stateDir);
    let control: ControlPlane;
    let underlay: Underlay;
    try {
      underlay = await chooseUnderlay(kernel, opts, { ipv4: conf.space !== undefined, ipv6: conf.space6 !== undefined });
      await checkHost(kernel, opts, conf, underlay);
      await mkdir(dirname(opts.subnetFile), { recursive: true, mode: 0o755 });
      abortable(signal);
      log.info({ node: opts.nodeName, underlay: describeUnderlay(underlay), backend: conf.Backend.Type, network: conf.Network }, "starting");
      control = await ControlPlane.start({
        name: opts.nodeName, bindAddr: formatIpv4(underlay.addr!), gossipPort: opts.gossipPort, join: opts.join,
        seeds: opts.seeds ?? (opts.join.length === 0 ? [opts.nodeName] : []), space: conf.space, space6: conf.space6, underlay6: underlay.addr6, keyring,
        stateDir: opts.stateDir, logger: log,
      });
    } catch (err) {
      await lock.release();
      throw err;
    }
    const agent = new Agent(opts, conf, kernel, underlay, control, lock, log);
    control.on("fatal", (err) => agent.fatal(err));
    // Serialized with reloads: a backend swap and a lost subnet never interleave.
    control.on("lost", (lost) => void agent.serially(() => agent.subnetLost(lost.subnet)).catch((err) => agent.fatal(err)));
    try {
      abortable(signal);
      const tcp: TcpListener[] = [];
      if (opts.healthzPort !== undefined) tcp.push({ host: opts.healthzIp, port: opts.healthzPort, endpoints: ["/healthz", "/readyz", ...(opts.healthzStatus ? (["/status"] as const) : [])] });
      if (opts.metricsPort !== undefined) tcp.push({ host: opts.metricsIp, port: opts.metricsPort, endpoints: ["/metrics"] });
      agent.http = await AgentHttp.listen(
        {
          ready: () => agent.isReady(),
          waitingFor: () => agent.whyNotReady(),
          status: () => agent.status(),
          metrics: agentMetrics(control, () => agent.backend, () => agent.subnet && formatPrefix(agent.subnet), () => agent.socketDrops()),
          reclaim: (node) => control.reclaim(node),
        },
        join(opts.stateDir, SOCKET_NAME),
        tcp,
      );
      // Nothing is programmed and no subnet.env written before this node reached its cluster: a
      // node whose join targets never answered would otherwise serve pods nobody can reach.
      if (!control.hasReachedCluster()) log.info({ join: control.joinStatus().targets }, "waiting to reach a join target before programming anything");
      agent.waitingFor = "reaching a join target (weft status: join)";
      await abortable(signal, control.reachedCluster());
      // Asked after joining: a subnet the cluster took away meanwhile (this node was reclaimed
      // while down) is never programmed; lease() then waits for the new one.
      agent.waitingFor = WAITING_FOR_LEASE;
      agent.subnet = await abortable(signal, control.lease());
      if (conf.space6) agent.subnet6 = await abortable(signal, control.lease6());
      log.info({ subnet: formatPrefix(agent.subnet), ...(agent.subnet6 && { subnet6: formatPrefix6(agent.subnet6) }) }, "lease held");
      agent.waitingFor = "starting the backend";
      // Listening before the backend starts: a peer that appears while startBackend's first sync
      // is under way is synced once the backend exists (a kick without a backend does nothing),
      // instead of waiting for the next reconcile.
      control.on("change", () => {
        void agent.sync.kick().catch((err) => log.error({ err }, "peer sync failed"));
        void agent.sync6.kick().catch((err) => log.error({ err }, "IPv6 peer sync failed"));
      });
      // Not raced with the abort: a backend half set up could not be undone; a stop waits for it.
      await agent.serially(() => agent.startBackend());
      abortable(signal);
      agent.reconcileTimer = setInterval(() => void agent.reconcile(), opts.reconcileIntervalMs);
      return agent;
    } catch (err) {
      await agent.stop(false).catch(() => undefined);
      throw err;
    }
  }

  /** Creates and starts the backend of the current config, announces it, writes subnet.env. */
  private async startBackend(): Promise<void> {
    const subnet = this.subnet!;
    const backend = createBackend(this.conf.Backend.Type, backendOptions(this.conf.Backend), {
      kernel: this.kernel, network: this.conf.space.network, subnet, underlay: this.underlay, stateDir: this.opts.stateDir, logger: this.log.child({ layer: "backend" }),
    });
    this.announcement = await backend.start();
    this.backend = backend;
    const [space6, subnet6] = [this.conf.space6, this.subnet6];
    if (space6 && subnet6) {
      // A second instance of the same backend for IPv6 (flannel-v6.<VNI> for vxlan), as flannel runs one per family.
      const backend6 = createBackend(this.conf.Backend.Type, backendOptions(this.conf.Backend), {
        kernel: this.kernel, network: space6.network, subnet: subnet6, underlay: this.underlay, stateDir: this.opts.stateDir, logger: this.log.child({ layer: "backend", family: 6 }),
      });
      this.announcement6 = await backend6.start();
      this.backend6 = backend6;
    }
    this.control.announce(this.announcement, this.announcement6);
    if (this.opts.ipMasq) await setIpMasq(this.kernel, { network: this.conf.space.network, subnet }, ...(space6 && subnet6 ? [{ network: space6.network, subnet: subnet6 }] : []));
    // One pod interface carries both families: it gets the smaller MTU.
    const mtu = Math.min(backend.mtu, this.backend6?.mtu ?? Infinity);
    await writeSubnetEnv(this.opts.subnetFile, {
      v4: { network: this.conf.space.network, subnet },
      ...(space6 && subnet6 && { v6: { network: space6.network, subnet: subnet6 } }),
      mtu,
      ipMasq: this.opts.ipMasq,
    });
    this.sync.reset();
    this.sync6.reset();
    await Promise.all([this.sync.kick(), this.sync6.kick()]);
    await backend.reconcile();
    await this.backend6?.reconcile();
    this.ready = true;
    this.log.info({ backend: backend.type, mtu, subnetFile: this.opts.subnetFile, peers: this.sync.size, peers6: this.sync6.size }, "ready");
  }

  /** Re-reads net-conf.json; a changed Backend is swapped in (the node keeps its subnet). Reloads run one at a time. */
  reload(): Promise<void> {
    return this.serially(() => this.reloadNow());
  }

  /** Runs backend changes (start, reload, a lost subnet) one at a time, in order. */
  private serially(task: () => Promise<void>): Promise<void> {
    return this.backendChanges.run(task);
  }

  /** Called once if this node must not run (its name is taken); the CLI stops it and exits. */
  onFatal(handler: (err: Error) => void): void {
    this.fatalHandler = handler;
    if (this.fatalError) handler(this.fatalError);
  }

  private fatal(err: Error): void {
    if (this.fatalError) return;
    this.fatalError = err;
    this.ready = false;
    this.log.error({ err, code: (err as { code?: string }).code ?? "AGENT_FATAL" }, "this node cannot go on running");
    this.fatalHandler?.(err);
  }

  /** Ready: lease held, backend programmed, subnet.env written, and the cluster reached. */
  isReady(): boolean {
    return this.ready && this.control.hasReachedCluster();
  }

  /**
   * The ring gave this node's subnet to another node (it was reclaimed while this node was cut
   * off, or its state was restored from an old copy). In this order: stop using it (the backend
   * and its routes go), take subnet.env away so the CNI plugin hands out no address of it, then,
   * with a new subnet, write subnet.env and program the backend again. Pods already running on
   * the old subnet keep addresses that now belong elsewhere: they must be restarted.
   */
  private async subnetLost(lost: string): Promise<void> {
    const v6 = this.subnet6 !== undefined && formatPrefix6(this.subnet6) === lost;
    if (!v6 && (!this.subnet || formatPrefix(this.subnet) !== lost)) return;
    const what = v6 ? "IPv6 subnet" : "subnet";
    this.log.error(
      { code: "AGENT_SUBNET_LOST", subnet: lost },
      `the cluster gave this node's ${what} ${lost} to another node: stopping the backend and removing ${this.opts.subnetFile}; restart this node's pods once it has a new subnet`,
    );
    if (v6) this.subnet6 = undefined;
    else this.subnet = undefined;
    await this.stopBackend();
    await rm(this.opts.subnetFile, { force: true });
    this.waitingFor = `a new ${what}: the cluster gave this node's ${what} to another node`;
    // The other family's subnet stays.
    const now = v6 ? formatPrefix6((this.subnet6 = await this.control.lease6())) : formatPrefix((this.subnet = await this.control.lease()));
    await this.startBackend();
    this.log.warn({ code: "AGENT_SUBNET_REPLACED", from: lost, to: now }, `now serving ${now} instead of ${lost}`);
  }

  private async reloadNow(): Promise<void> {
    const next = requireIpv4(parseNetConf(await readConfig(this.opts.netConfig), this.opts.netConfig));
    if (next.Network !== this.conf.Network || next.space.fingerprint !== this.conf.space.fingerprint || next.space6?.fingerprint !== this.conf.space6?.fingerprint) {
      throw new WeftError("CONFIG_NET_CONF_RELOAD_REFUSED", "Network and subnet keys cannot change while running; stop every agent to change them");
    }
    if (JSON.stringify(next.Backend) === JSON.stringify(this.conf.Backend)) return;
    const prev = this.conf;
    this.log.info({ from: prev.Backend.Type, to: next.Backend.Type }, "swapping backend");
    await this.stopBackend();
    this.conf = next;
    try {
      await this.startBackend();
    } catch (err) {
      // Never left without a backend: the previous one worked, so it comes back.
      this.log.error({ err, backend: next.Backend.Type }, `the ${next.Backend.Type} backend failed to start; going back to ${prev.Backend.Type}`);
      await this.stopBackend();
      this.conf = prev;
      await this.startBackend();
      throw err;
    }
  }

  /** Stops and removes the backend; peer syncs meanwhile do nothing (startBackend sets every peer). */
  private async stopBackend(): Promise<void> {
    const [backend, backend6] = [this.backend, this.backend6];
    this.ready = false;
    this.waitingFor = "swapping the backend";
    this.backend = undefined;
    this.backend6 = undefined;
    this.announcement6 = undefined;
    await backend?.stop(false);
    await backend6?.stop(false);
  }

  /** Periodic: peers from the control plane, then kernel drift repaired. */
  private async reconcile(): Promise<void> {
    if (!this.ready || !this.backend) return;
    try {
      await Promise.all([this.sync.kick(), this.sync6.kick()]);
      await this.backend.reconcile();
      await this.backend6?.reconcile();
    } catch (err) {
      this.log.error({ err }, "reconcile failed; trying again at the next interval");
    }
  }

  status(): unknown {
    const settings = this.control.settings();
    return {
      node: this.opts.nodeName,
      underlay: formatIpv4(this.underlay.addr!),
      ...(this.underlay.addr6 !== undefined && { underlay6: formatIpv6(this.underlay.addr6) }),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      ready: this.isReady(),
      waitingFor: this.isReady() ? undefined : this.whyNotReady(),
      join: this.control.joinStatus(),
      network: this.conf.Network,
      subnet: this.subnet && formatPrefix(this.subnet),
      ...(this.subnet6 && { subnet6: formatPrefix6(this.subnet6), backend6: this.announcement6 }),
      backend: this.announcement,
      mtu: this.backend?.mtu,
      members: this.control.allMembers().map((m) => ({ name: m.name, addr: `${m.host}:${m.port}`, state: m.state, incarnation: m.incarnation })),
      peers: this.control.peers().map((p) => ({ name: p.name, subnet: formatPrefix(p.subnet), underlay: formatIpv4(p.underlay), backend: p.backend.type })),
      ...(this.conf.space6 && { peers6: this.control.peers6().map((p) => ({ name: p.name, subnet: formatPrefix6(p.subnet), underlay: formatIpv6(p.underlay), backend: p.backend.type })) }),
      /** Subnets kept for dead or departed nodes, and when they go back to the ring (weft reclaim hands them back now). */
      reserved: this.control.reservations().map((r) => ({ ...r, reclaimAt: r.reclaimAt === null ? null : new Date(r.reclaimAt).toISOString() })),
      settings: { ...settings, reclaimGrace: formatDuration(settings.lease.reclaimGraceMs) },
      backendCounters: this.backend?.counters(),
      dataplane: this.backend?.dataplaneCounters?.(),
      socketDrops: this.socketDrops(),
    };
  }

  private whyNotReady(): string {
    const lease = this.waitingFor === WAITING_FOR_LEASE ? this.control.leaseWaitReason() : null;
    return lease ? `${this.waitingFor}: ${lease}` : this.waitingFor;
  }

  /** Kernel drops on the userspace dataplane's sockets (kernel backends have none of their own). */
  private socketDrops(): SocketDrops | undefined {
    const b = this.conf.Backend;
    if (!this.backend?.dataplaneCounters || (b.Type !== "wasm-vxlan" && b.Type !== "udp")) return undefined;
    return udpSocketDrops(b.Port);
  }

  /** Leaves the cluster and removes what the agent made (devices too, unless keepOnExit). */
  async stop(leave = true): Promise<void> {
    this.ready = false;
    clearInterval(this.reconcileTimer);
    await this.control.stop(leave).catch((err) => this.log.warn({ err }, "leaving the cluster failed"));
    await this.backend?.stop(this.opts.keepOnExit);
    await this.backend6?.stop(this.opts.keepOnExit);
    if (this.opts.ipMasq) await removeIpMasq(this.kernel).catch((err) => this.log.warn({ err }, "removing ip-masq rules failed"));
    await this.http?.close();
    await this.lock.release();
    this.log.info({ keptDevices: this.opts.keepOnExit }, "stopped");
  }
}

type Ipv4NetConf = NetConf & { readonly space: NonNullable<NetConf["space"]> };

/** IPv4-only and dual-stack run; IPv6-only (EnableIPv4 false) is refused before anything starts, for now. */
function requireIpv4(conf: NetConf): Ipv4NetConf {
  if (conf.space === undefined) {
    throw new WeftError("CONFIG_NET_CONF_INVALID", "EnableIPv4 = false: this weft agent runs IPv4-only or dual-stack, not IPv6-only yet; set EnableIPv4 to true (or leave it out) and keep EnableIPv6 for dual-stack");
  }
  return conf as Ipv4NetConf;
}

/** 86400000 → "24h", 90000 → "1m30s". */
function formatDuration(ms: number): string {
  const units: Array<[string, number]> = [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]];
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

async function readConfig(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (cause) {
    throw new WeftError("CONFIG_NET_CONF_UNREADABLE", `cannot read the network config ${path}: ${(cause as Error).message}; pass --net-config PATH`, { cause });
  }
}

/**
 * Throws AGENT_STOPPED once `signal` is aborted; with a promise, also rejects when the abort
 * comes while it is pending (the caller then undoes what was done).
 */
function abortable(signal: AbortSignal | undefined): void;
function abortable<T>(signal: AbortSignal | undefined, work: Promise<T>): Promise<T>;
function abortable<T>(signal: AbortSignal | undefined, work?: Promise<T>): Promise<T> | undefined {
  const stopped = () => new WeftError("AGENT_STOPPED", "stopped by a signal while starting; what was set up is removed again");
  if (signal?.aborted) throw stopped();
  if (!work || !signal) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(stopped());
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
