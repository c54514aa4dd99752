// The userspace backends, `wasm-vxlan` and `udp`: weft's own dataplane (src/dataplane) behind the
// Backend interface. wasm-vxlan speaks the kernel's VXLAN (so it mixes with kernel `vxlan` peers:
// same VNI and port, its VTEP MAC in their neighbour and FDB entries, theirs in its next hops);
// udp speaks flannel's udp format. The TUN device and sockets are opened when the backend is
// constructed, in the calling thread's network namespace: the agent runs inside its host's
// namespace, and in-process tests construct it inside withNetns (src/io/netns.ts). A TUN device
// lives only while weft holds it open, so stop() always removes it (nothing to keep).
// wasm-vxlan carries IPv6 too, one instance per family as the kernel vxlan backend runs
// flannel.<VNI> and flannel-v6.<VNI>: the IPv6 instance has its own TUN device weft-v6.<VNI> (IPv6
// on, no link-local address), its own VTEP MAC and IPv6 sockets on the IPv6 underlay address, so
// it mixes with kernel flannel-v6.<VNI> peers. The IPv4 device keeps IPv6 off. On a node without
// an IPv6 underlay address (dual-stack or IPv6-only) the IPv6 instance rides the IPv4 underlay
// instead: IPv4 sockets on Backend.IPv6OverIPv4Port, Port + 1 by default (in dual-stack the IPv4
// instance holds Port on the same address, and one reuseport group cannot be split by inner
// family), announced in its record like any port; such a node exchanges IPv6 only with peers that
// do the same (kernel flannel-v6 always uses an IPv6 underlay).
import type { Logger } from "pino";
import { DATAPLANE_MAX_MTU, UserspaceDataplane, type DataplaneCounters } from "../../dataplane/dataplane.js";
import { readRoutes } from "../../kernel/entries.js";
import { removeStaleGatewayRoutes } from "../../kernel/stale-routes.js";
import { readAddresses, readLinks } from "../../kernel/links.js";
import { isWeftError, WeftError } from "../../errors.js";
import { formatMac, parseMac } from "../../net/ipv4.js";
import { familyOf, formatAddr, formatAnyPrefix } from "../../net/ip.js";
import {
  DEFAULT_VNI,
  ipv6OverIpv4Port,
  UDP_PORT,
  VXLAN_PORT,
  type Backend,
  type BackendAnnouncement,
  type BackendContext,
  type BackendCounters,
  type BackendOptions,
  type BackendPeer,
  KernelStats,
} from "../backend.js";
import { VXLAN_IPV4_UNDERLAY_BYTES, VXLAN_IPV6_UNDERLAY_BYTES } from "../vxlan/vxlan.js";
import { announcementProblem, UnreachablePeers } from "../unreachable.js";
import { followUnderlay } from "../underlay-name.js";
import { assertIpv6Mtu, cappedUnderlayMtu, UnderlayMtu } from "../underlay-mtu.js";
import { loadVtepMac } from "../vtep-mac.js";

/**
 * The IPv6 TUN device's sysctls, set before it goes up, so that an idle device gets no packet from
 * the kernel (`idle-quiet.test.ts`). On a router (all.forwarding 1) a new device joins the
 * all-routers groups at once and would send MLD reports for them into the device at link up.
 */
const IPV6_TUN_SYSCTLS: ReadonlyArray<readonly [string, number]> = [
  // No link-local address (a TUN device has no neighbours): without one, no router solicitations.
  ["addr_gen_mode", 1],
  // MLDv1: leaving a group that was never reported sends nothing (MLDv2 sends the leave at link up).
  ["force_mld_version", 1],
  // A host interface: it leaves the all-routers groups. Forwarding through it follows all.forwarding.
  ["forwarding", 0],
  // ...and, as a host interface, it takes no router advertisements (none belong on it).
  ["accept_ra", 0],
];

/** The TUN device: flannel's name for udp, weft.<VNI> and weft-v6.<VNI> for wasm-vxlan. */
export const tunDeviceName = (type: "udp" | "wasm-vxlan", vni: number, family: 4 | 6): string =>
  type === "udp" ? "flannel0" : family === 4 ? `weft.${vni}` : `weft-v6.${vni}`;

/** The dataplane's refusals of one peer, which leave the others as they were. */
const PEER_REFUSALS: ReadonlySet<string> = new Set([
  "DATAPLANE_SUBNET_OVERLAP",
  "DATAPLANE_PEERS_FULL",
  "HOTPATH_ROUTE_ERR_FULL_RULES",
  "HOTPATH_ROUTE_ERR_FULL_TBL8",
]);

/** flannel's udp encapsulation: outer IPv4 (20) + UDP (8). */
export const UDP_OVERHEAD = 28;

export class UserspaceBackend implements Backend {
  /**
   * The pods' MTU (FLANNEL_MTU): what the kernel vxlan backend writes, minus 50 in every mode, so a
   * backend swap by config keeps the pods' MTU. Over an IPv6 underlay that is 20 bytes more than
   * weft-v6.<VNI> carries; the kernel answers the excess with Packet Too Big, as for flannel-v6.
   */
  readonly mtu: number;
  /** The TUN device's MTU: what fits the underlay after this family's encapsulation. */
  private readonly deviceMtu: number;
  /** deviceMtu, or what the underlay interface carries once its MTU was lowered (IPv6: not below 1280). */
  private readonly underlayMtu: UnderlayMtu;
  /** BACKEND_GSO_TOO_BIG was logged (once: the counter tells how it goes on). */
  private gsoTooBigLogged = false;
  /** flannel0 for udp (flannel's name), weft.<VNI> for wasm-vxlan, weft-v6.<VNI> for its IPv6 instance. */
  readonly tunName: string;
  private readonly family: 4 | 6;
  private readonly logger: Logger;
  private readonly dataplane: UserspaceDataplane;
  private readonly unreachable: UnreachablePeers;
  /**
   * Peers the dataplane had no room for, unreachable until a removal makes room: the agent sets a
   * peer again only when it changes.
   */
  private readonly waiting = new Map<string, BackendPeer>();
  private readonly vtepMac: Uint8Array;
  private readonly port: number;
  /** The address family of the dataplane's sockets: the underlay address it listens on. */
  private readonly socketFamily: 4 | 6;
  private readonly vni: number;
  private readonly stats = new KernelStats();
  private state: "new" | "running" | "stopped" = "new";
  /** /proc/sys was read-only at start: the device runs without its sysctls, and reconcile leaves them. */
  private sysctlsReadOnly = false;
  /**
   * The kernel has no IPv6 (ipv6.disable=1): the IPv4 device's one sysctl, IPv6 off, holds as it
   * is, and there is no file to write it to.
   */
  private noIpv6 = false;

  /** Opens the TUN device and sockets in the calling thread's namespace (synchronous on purpose). */
  constructor(
    readonly type: "udp" | "wasm-vxlan",
    options: BackendOptions,
    private readonly ctx: BackendContext,
  ) {
    const udp = type === "udp";
    this.family = familyOf(ctx.subnet.addr);
    if (this.family === 6 && udp)
      throw new WeftError(
        "BACKEND_NO_IPV6",
        "flannel's udp wire format carries IPv4 only; use vxlan or wasm-vxlan for IPv6",
      );
    this.logger = ctx.logger.child({ backend: type });
    this.unreachable = new UnreachablePeers(this.logger);
    // An IPv6 instance over the IPv4 underlay (the node has no IPv6 underlay address).
    const overIpv4 = this.family === 6 && ctx.underlay.addr6 === undefined;
    const port = options.port ?? (udp ? UDP_PORT : VXLAN_PORT);
    this.port = overIpv4 ? (options.ipv6OverIpv4Port ?? ipv6OverIpv4Port(port)) : port;
    this.vni = options.vni ?? DEFAULT_VNI;
    const overhead = udp
      ? UDP_OVERHEAD
      : this.family === 4 || overIpv4
        ? VXLAN_IPV4_UNDERLAY_BYTES
        : VXLAN_IPV6_UNDERLAY_BYTES;
    const underlayMtu = cappedUnderlayMtu(this.logger, options.mtu, ctx.underlay, `${type} IPv${this.family}`);
    const fits = underlayMtu - overhead;
    // A jumbo underlay (9000) is fine: pods get the largest MTU the packet slots hold, and TCP
    // still moves 64 KB super-packets through the TUN device with offloads on.
    this.deviceMtu = Math.min(fits, DATAPLANE_MAX_MTU);
    this.mtu = Math.min(underlayMtu - (udp ? UDP_OVERHEAD : VXLAN_IPV4_UNDERLAY_BYTES), DATAPLANE_MAX_MTU);
    if (fits > DATAPLANE_MAX_MTU)
      this.logger.info(
        { underlayMtu: ctx.underlay.mtu, mtu: this.deviceMtu },
        `the underlay allows MTU ${fits}; the ${type} dataplane uses at most ${DATAPLANE_MAX_MTU}`,
      );
    this.tunName = tunDeviceName(type, this.vni, this.family);
    if (this.family === 6) assertIpv6Mtu(this.tunName, this.deviceMtu, underlayMtu, overhead);
    this.underlayMtu = new UnderlayMtu(
      this.logger,
      this.tunName,
      this.deviceMtu,
      ctx.underlay.mtu,
      overhead,
      this.mtu,
      this.family === 6,
    );
    this.vtepMac = loadVtepMac(ctx.stateDir, this.family);
    this.socketFamily = this.family === 4 || overIpv4 ? 4 : 6;
    const listenAddr = this.socketFamily === 4 ? ctx.underlay.addr : ctx.underlay.addr6;
    if (listenAddr === undefined || this.port > 65535)
      throw new WeftError(
        "BACKEND_NO_UNDERLAY",
        listenAddr === undefined
          ? `no underlay address for the IPv${this.family} ${type} dataplane; give the node one (--public-ip${this.family === 6 ? "v6 or --public-ip" : ""})`
          : `the IPv6 ${type} dataplane over the IPv4 underlay listens on Backend.IPv6OverIPv4Port (default Backend.Port + 1), and ${this.port} is no port; set Backend.IPv6OverIPv4Port`,
      );
    if (overIpv4)
      this.logger.info(
        { port: this.port },
        "no IPv6 underlay address: IPv6 rides the IPv4 underlay (reaching only peers that do the same)",
      );
    this.dataplane = new UserspaceDataplane({
      format: udp ? "udp" : "vxlan",
      tunName: this.tunName,
      mtu: this.deviceMtu,
      podMtu: this.mtu,
      network: ctx.network,
      subnet: ctx.subnet,
      listenAddr,
      port: this.port,
      vni: this.vni,
      vtepMac: this.vtepMac,
      workers: options.workers,
      queuesPerWorker: options.queuesPerWorker,
      offloads: options.offloads,
      busyPollUs: options.busyPollUs,
      queueDelayUs: options.queueDelayUs,
      flowQueue: options.flowQueue,
      onFailed: (err) => ctx.onFailed?.(err),
      logger: this.logger,
    });
  }

  async start(): Promise<BackendAnnouncement> {
    if (this.state !== "new")
      throw new WeftError("BACKEND_STATE", `the ${this.type} backend was already started; create a new one`);
    try {
      // A family that is off stays off on the device, and the kernel sends neither device anything
      // of its own (the dataplane could only drop it). The IPv4 device has IPv6 off: no link-local
      // address, no router solicitations. The IPv6 device gets its sysctls while still down.
      this.noIpv6 = this.family === 4 && !this.ctx.kernel.hasIpv6();
      if (this.noIpv6)
        this.logger.info(`the kernel runs without IPv6 (ipv6.disable=1): ${this.tunName} has none to switch off`);
      const sysctls = this.noIpv6 ? [] : this.sysctls();
      await this.setSysctls(sysctls);
      this.stats.done(sysctls.length);
      await this.dataplane.start(this.ctx.kernel);
      this.stats.done(3); // the TUN device's MTU, address and link state
      await followUnderlay(this.ctx.kernel, this.ctx.underlay, this.logger);
      await this.removeStaleRoutes();
      // A stop() meanwhile stopped the dataplane: this start must not say running. (TypeScript
      // keeps the state narrowed to "new" across the awaits.)
      if ((this.state as string) === "stopped")
        throw new WeftError("DATAPLANE_STOPPED", "the backend was stopped while it started; nothing to do");
    } catch (err) {
      // A stop() meanwhile makes the dataplane's start reject: no kernel error, and the state
      // stays "stopped".
      if (!(err instanceof WeftError && err.code === "DATAPLANE_STOPPED")) this.stats.refused();
      await this.dataplane.stop();
      throw err;
    }
    this.state = "running";
    const a = this.announcement();
    this.logger.info(
      { ...a, mtu: this.deviceMtu, podMtu: this.mtu, tun: this.tunName },
      `${this.type} backend started`,
    );
    return a;
  }

  /**
   * Gateway routes to node subnets (host-gw's, vxlan DirectRouting's: flannel's, or weft's kept
   * ones) would take pod traffic past the TUN device; only a kernel backend removes them itself.
   */
  private async removeStaleRoutes(): Promise<void> {
    const { removed, failures } = await removeStaleGatewayRoutes(
      this.ctx.kernel,
      this.ctx.network,
      this.ctx.subnet.len,
      this.ctx.underlay.iface,
      // Any node subnet's route in the live network takes pod traffic past the TUN device.
      { longer: true },
    );
    this.stats.done(removed.length + failures.length, failures.length);
    for (const r of removed)
      this.logger.warn(
        { code: "BACKEND_STALE_ROUTE", dst: formatAnyPrefix(r.dst), via: formatAddr(r.gateway!), dev: r.dev },
        `removed the route to ${formatAnyPrefix(r.dst)} via ${formatAddr(r.gateway!)}, a node subnet's route (flannel's, or kept from a kernel backend) that would take pod traffic past ${this.tunName}`,
      );
    for (const f of failures)
      this.logger.warn(
        { code: "BACKEND_STALE_ROUTE", command: f.command },
        `could not remove a stale route: ${f.message}; remove it by hand (ip route del) if it is weft's or flannel's, or pod traffic to that subnet goes past ${this.tunName}`,
      );
  }

  /**
   * A peer the dataplane refuses (its subnet overlaps another peer's, or the tables are full) is
   * unreachable, as one whose announcement does not fit: the other peers of the sync still get set.
   */
  async setPeer(peer: BackendPeer): Promise<void> {
    this.assertRunning();
    this.set(peer);
  }

  private set(peer: BackendPeer): void {
    this.waiting.delete(peer.name);
    const reason = announcementProblem(this.announcement(), this.ctx, peer) ?? this.setInDataplane(peer);
    this.unreachable.note(peer, reason);
    // A refused update takes the peer out: its room goes to the peers waiting for room.
    if (reason && this.dataplane.removePeer(peer.name)) this.giveRoom();
  }

  /** Sets `peer` in the dataplane, whose table checks overlaps itself; why it refused, or undefined. */
  private setInDataplane(peer: BackendPeer): string | undefined {
    try {
      this.dataplane.setPeer({
        name: peer.name,
        run: peer.run,
        subnet: peer.subnet,
        underlay: peer.underlay,
        port: peer.backend.port ?? this.port,
        vtepMac: this.type === "wasm-vxlan" ? parseMac(peer.backend.vtepMac!) : undefined,
      });
      return undefined;
    } catch (err) {
      if (!(err instanceof WeftError && PEER_REFUSALS.has(err.code))) throw err;
      if (err.code !== "DATAPLANE_SUBNET_OVERLAP") this.waiting.set(peer.name, peer);
      return err.message;
    }
  }

  async removePeer(name: string): Promise<void> {
    this.assertRunning();
    this.unreachable.forget(name);
    this.waiting.delete(name);
    if (this.dataplane.removePeer(name)) this.giveRoom();
  }

  /** Room left in the dataplane goes to the peers waiting for room, in turn, until one finds none. */
  private giveRoom(): void {
    for (const peer of this.waiting.values()) {
      this.set(peer);
      if (this.waiting.has(peer.name)) return;
    }
  }

  /**
   * The TUN device's sysctls by their slash names (a device name like weft.1 holds a dot) and the
   * values that keep the kernel from sending it anything of its own.
   */
  private sysctls(): ReadonlyArray<readonly [string, number]> {
    const settings: ReadonlyArray<readonly [string, number]> =
      this.family === 4 ? [["disable_ipv6", 1]] : IPV6_TUN_SYSCTLS;
    return settings.map(([key, value]) => [`net/ipv6/conf/${this.tunName}/${key}`, value]);
  }

  /**
   * The peers live in the dataplane's own table; what can drift is the TUN device's address, route,
   * MTU (lowered to what the underlay interface carries, if its MTU was lowered), link state and
   * sysctls.
   */
  async reconcile(): Promise<void> {
    this.assertRunning();
    const [kernel, network, subnet] = [this.ctx.kernel, this.ctx.network, this.ctx.subnet];
    const tun = this.tunName;
    // The underlay interface's MTU is read by name: its current one (it may have been renamed).
    await this.refusedWhole(() => followUnderlay(kernel, this.ctx.underlay, this.logger));
    const [[link, lower], addrs, routes] = await this.refusedWhole(() =>
      Promise.all([
        readLinks(kernel, [tun, this.ctx.underlay.iface]),
        readAddresses(kernel, tun, this.family),
        readRoutes(kernel, network),
      ]),
    );
    this.noteGsoTooBig();
    if (link) await this.repairSysctls();
    const lines: string[] = [];
    if (!addrs.some((a) => a.addr === subnet.addr && a.len === network.len))
      lines.push(
        `addr replace ${formatAddr(subnet.addr)}/${network.len} dev ${tun}${this.family === 6 ? " nodad" : ""}`,
      );
    // A device set down lost its prefix route, which the kernel puts back at link up; a route
    // replace on the down device is refused (ENETDOWN), a false kernel error at every repair.
    else if (
      link?.up &&
      !routes.some((r) => r.dev === tun && r.dst.addr === network.addr && r.dst.len === network.len)
    ) {
      lines.push(
        `route replace ${formatAnyPrefix(network)} dev ${tun} proto kernel${this.family === 4 ? " scope link" : ""} src ${formatAddr(subnet.addr)}`,
      );
    }
    const mtu = this.underlayMtu.fitting(lower, link?.mtu);
    if (link && link.mtu !== mtu) lines.push(`link set ${tun} mtu ${mtu}`);
    if (!link?.up) lines.push(`link set ${tun} up`);
    if (lines.length === 0) return;
    this.stats.driftRepairs += lines.length;
    this.logger.warn({ commands: lines }, `repairing ${tun}`);
    const failures = await this.refusedWhole(() => kernel.ipBatchForce(lines));
    this.stats.done(lines.length, failures.length);
    for (const f of failures)
      this.logger.error(
        { command: f.command },
        `the kernel refused \`${f.command}\`: ${f.message}; reconcile will try again`,
      );
  }

  /**
   * Says once that the kernel refuses the dataplane's GSO sends as too big for the path: they go
   * again as single datagrams, which costs a refused send per batch, and the pods' MTU is too large
   * for that path (io.udpGsoTooBig counts them).
   */
  private noteGsoTooBig(): void {
    if (this.gsoTooBigLogged) return;
    const sends = this.dataplane.ioCounter("udpGsoTooBig");
    if (sends === 0n) return;
    this.gsoTooBigLogged = true;
    this.logger.warn(
      { code: "BACKEND_GSO_TOO_BIG", sends },
      `the kernel refuses ${this.tunName}'s UDP GSO sends as larger than the path's MTU (the underlay interface's MTU lowered, a route's locked mtu, a PMTU exception); their datagrams go again one by one, at some cost in throughput. Give the underlay path the MTU the agent started with (${this.deviceMtu} plus encapsulation), or restart the agent and then the pods`,
    );
  }

  /**
   * Sets the device's sysctls; where /proc/sys is read-only (a container that is not privileged,
   * such as kube-flannel.yml's) it goes on without them, as flannel does, and says once what that
   * costs: the kernel's own packets on the device, which the dataplane drops.
   */
  private async setSysctls(sysctls: ReadonlyArray<readonly [string, number]>): Promise<void> {
    for (const [key, value] of sysctls) {
      try {
        await this.ctx.kernel.sysctl(key, value);
      } catch (err) {
        if (!isWeftError(err, "KERNEL_SYSCTL_READ_ONLY")) throw err;
        this.sysctlsReadOnly = true;
        this.logger.warn(
          { code: "BACKEND_SYSCTLS_READ_ONLY", err },
          `cannot set ${this.tunName}'s sysctls (/proc/sys is read-only): going on without them; the kernel may send the device packets of its own (router solicitations, MLD reports), which the dataplane drops. Run the agent privileged to set them`,
        );
        return;
      }
    }
  }

  /**
   * Writes back the device's sysctls that something else changed: a write of
   * net.ipv6.conf.all.forwarding (kube-proxy makes one) sets every device's forwarding, so
   * weft-v6.<VNI> joins the all-routers groups and the kernel sends MLD reports into it; and
   * all.disable_ipv6 sets every device's disable_ipv6.
   */
  /** A read or batch that failed whole (iproute2 could not run, or not in the namespace) counts as one refused command, as the kernel backends' rounds do. */
  private async refusedWhole<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      this.stats.refused();
      throw err;
    }
  }

  private async repairSysctls(): Promise<void> {
    if (this.sysctlsReadOnly || this.noIpv6) return;
    const kernel = this.ctx.kernel;
    const wanted = this.sysctls();
    let values: string[];
    try {
      values = await kernel.readSysctls(wanted.map(([key]) => key));
    } catch (err) {
      // The device's address, route and link state are still repaired below.
      this.stats.refused();
      this.logger.error({ err }, `cannot read ${this.tunName}'s sysctls; reconcile will try again`);
      return;
    }
    const drifted = wanted
      .map(([key, value], i) => ({ key, value, found: values[i] }))
      .filter((d) => d.found !== String(d.value));
    if (drifted.length === 0) return;
    this.stats.driftRepairs += drifted.length;
    this.logger.warn({ sysctls: drifted }, `repairing ${this.tunName}'s sysctls`);
    for (const { key, value } of drifted) {
      try {
        await kernel.sysctl(key, value);
        this.stats.done(1);
      } catch (err) {
        this.stats.refused();
        this.logger.error({ err, key }, `the kernel refused sysctl ${key}=${value}; reconcile will try again`);
      }
    }
  }

  async stop(keep: boolean): Promise<void> {
    // A second stop resolves when the first one has closed everything (one dataplane stop).
    if (this.state === "stopped") return this.dataplane.stop();
    this.state = "stopped";
    await this.dataplane.stop();
    this.logger.info(
      keep ? `backend stopped; ${this.tunName} is gone with it (a TUN device cannot be kept)` : "backend stopped",
    );
  }

  counters(): BackendCounters {
    return { ...this.stats.counters(), peersUnreachable: this.unreachable.count };
  }

  dataplaneCounters(opts?: { peers?: boolean }): DataplaneCounters {
    return this.dataplane.counters(opts);
  }

  dataplaneSockets(): { port: number; family: 4 | 6 } {
    return { port: this.port, family: this.socketFamily };
  }

  private announcement(): BackendAnnouncement {
    return this.type === "wasm-vxlan"
      ? { type: this.type, vtepMac: formatMac(this.vtepMac), port: this.port, vni: this.vni }
      : { type: this.type, port: this.port };
  }

  private assertRunning(): void {
    if (this.state !== "running") {
      throw new WeftError(
        "BACKEND_NOT_RUNNING",
        `the ${this.type} backend is ${this.state === "new" ? "not started" : "stopped"}; start a new one`,
      );
    }
  }
}
