// One interface for every way weft moves pod traffic between hosts, as flannel has: the agent
// hands a backend its lease and the underlay, then tells it about peers as membership changes.
// Kernel backends (vxlan, host-gw) program the kernel through Kernel (iproute2); userspace
// backends (wasm-vxlan, udp) run the dataplane in src/dataplane.
import type { Logger } from "pino";
import type { DataplaneCounters } from "../dataplane/dataplane.js";
import type { Kernel } from "../kernel/iproute.js";
import type { IpAddr, IpPrefix } from "../net/ip.js";

export const BACKEND_TYPES = ["vxlan", "host-gw", "udp", "wasm-vxlan"] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

/** The backends that run weft's own dataplane (src/dataplane) instead of programming the kernel's. */
export const USERSPACE_BACKENDS: readonly BackendType[] = ["udp", "wasm-vxlan"];

/** flannel's defaults: VNI 1; the kernel's VXLAN port 8472 (not IANA's 4789); udp port 8285. */
export const DEFAULT_VNI = 1;
export const VXLAN_PORT = 8472;
export const UDP_PORT = 8285;
/** wasm-vxlan's IPv6 dataplane over the IPv4 underlay, by default (Backend.IPv6OverIPv4Port): the
 *  port after the IPv4 dataplane's, which holds `port` on the same address in dual-stack. */
export const ipv6OverIpv4Port = (port: number): number => port + 1;

/** The host's side of the underlay: where peers reach it. */
export interface Underlay {
  /** Interface name (e.g. eth0) as last seen: followUnderlay updates it in place after a rename. */
  iface: string;
  /** Interface index: unlike the name, it stays the same while the interface exists; followUnderlay
   *  updates it in place for an interface made anew under the same name. */
  ifindex: number;
  /** IPv4 address peers send to (flannel's --public-ip); absent when IPv4 is off. */
  addr?: number;
  /** IPv6 address peers send to (flannel's --public-ipv6); present when IPv6 is enabled. */
  addr6?: bigint;
  /** The interface's own addresses, where --public-ip or --public-ipv6 gives peers another: the
   *  interface is known by these too when followUnderlay checks a device. */
  ownAddrs?: { addr?: number; addr6?: bigint };
  mtu: number;
}

/** What a node announces to the others for its backend (in its gossip record). */
export interface BackendAnnouncement {
  type: BackendType;
  /** VTEP MAC for the VXLAN wire format, stable across restarts. */
  vtepMac?: string;
  /** UDP port of the VXLAN or udp wire format. */
  port?: number;
  vni?: number;
  /** VXLAN Group Based Policy extension (kernel vxlan only); both ends must agree. */
  gbp?: boolean;
}

/**
 * Per-backend keys of net-conf.json's Backend object, in camelCase (VNI -> vni, Port -> port,
 * MTU -> mtu, DirectRouting -> directRouting, GBP -> gbp, Learning -> learning, Workers -> workers, Offloads -> offloads).
 * Each backend reads the keys it has and ignores the rest; the config layer rejects keys a type
 * does not have.
 */
export interface BackendOptions {
  /** VXLAN network identifier (vxlan, wasm-vxlan). Default 1. */
  vni?: number;
  /** UDP port: default 8472 (vxlan, wasm-vxlan) or 8285 (udp). */
  port?: number;
  /** wasm-vxlan's IPv6 instance where IPv6 rides the IPv4 underlay: its UDP port; default `ipv6OverIpv4Port(port)`. */
  ipv6OverIpv4Port?: number;
  /** The underlay MTU to assume instead of the interface's (flannel's MTU key); the encapsulation is subtracted. */
  mtu?: number;
  /** vxlan: peers on the same L2 network get a plain route via their underlay address. */
  directRouting?: boolean;
  /** vxlan: VXLAN Group Based Policy. */
  gbp?: boolean;
  /** vxlan: the device learns peers' MACs from received packets too (flannel's Learning). Default false. */
  learning?: boolean;
  /** wasm-vxlan, udp: dataplane worker threads. Default: defaultWorkers() (src/dataplane/defaults.ts). */
  workers?: number;
  /** wasm-vxlan, udp: queue pairs (TUN queue and socket) per worker (see UserspaceDataplaneOptions). */
  queuesPerWorker?: number;
  /** wasm-vxlan, udp: segmentation offloads where the kernel has them (TSO through TUN, UDP GSO/GRO). Default true. */
  offloads?: boolean;
  /** wasm-vxlan, udp: microseconds a worker polls without sleeping after traffic (see UserspaceDataplaneOptions). */
  busyPollUs?: number;
  /** wasm-vxlan, udp: longest wait of a datagram in a socket's receive queue, µs (0: no limit). */
  queueDelayUs?: number;
  /** wasm-vxlan, udp: per-flow queues on the send path, sparse flows first (see UserspaceDataplaneOptions). */
  flowQueue?: boolean;
}

/** Plain counters for the metrics endpoint. */
export interface BackendCounters {
  /** iproute2 commands sent to change kernel state (lines of a batch count one each). */
  kernelCommands: number;
  /** Of those, the ones the kernel refused; a failed round, read or start counts as one command refused. */
  kernelErrors: number;
  /** Peers known but not reachable (wrong wire format or VNI, or not on the same L2 for host-gw). */
  peersUnreachable: number;
  /** Entries reconcile() found missing, wrong or stale and repaired. */
  driftRepairs: number;
}

/**
 * A backend's kernel programming counters (BackendCounters' kernelCommands, kernelErrors and
 * driftRepairs), counted by one rule: a command counts once its outcome is known, and every error
 * is one of the commands. So kernelErrors never outruns kernelCommands, and the commands taken
 * (weft_kernel_programming_total{result="ok"}) never fall.
 */
export class KernelStats {
  kernelCommands = 0;
  kernelErrors = 0;
  driftRepairs = 0;

  /** `sent` commands whose outcome is in, `refusedCount` of them refused. */
  done(sent: number, refusedCount = 0): void {
    this.kernelCommands += Math.max(sent, refusedCount);
    this.kernelErrors += refusedCount;
  }

  /** An operation that failed whole (a round, a read, a start): one command, refused. */
  refused(): void {
    this.done(1, 1);
  }

  counters(): Pick<BackendCounters, "kernelCommands" | "kernelErrors" | "driftRepairs"> {
    return { kernelCommands: this.kernelCommands, kernelErrors: this.kernelErrors, driftRepairs: this.driftRepairs };
  }
}

/**
 * A peer as backends see it: its lease, where it is, what it announced. The control plane hands
 * out peers of one family (`BackendPeer<Ipv4Prefix, number>`, `BackendPeer<Ipv6Prefix, bigint>`).
 */
export interface BackendPeer<Prefix extends IpPrefix = IpPrefix, Addr extends IpAddr = IpAddr> {
  name: string;
  /** Which run of the node (ControlPlane's count): another one is a new peer of the same name. */
  run?: number;
  /** The peer's subnet and underlay address of the backend's family. */
  subnet: Prefix;
  underlay: Addr;
  backend: BackendAnnouncement;
}

/**
 * A backend instance works on one address family: network, subnet and peers are all IPv4 or all
 * IPv6. A dual-stack node runs one instance per family (kernel backends only; see
 * src/backends/index.ts).
 */
export interface BackendContext {
  kernel: Kernel;
  /** The whole pod network of this family (flannel's Network or IPv6Network). */
  network: IpPrefix;
  /** This node's lease in it. */
  subnet: IpPrefix;
  underlay: Underlay;
  /** Directory for state kept across restarts (e.g. the VTEP MAC). */
  stateDir: string;
  logger: Logger;
  /**
   * Called once if the running backend stops carrying traffic by itself and cannot recover in
   * place (a userspace backend whose TUN device was deleted, or whose dataplane workers keep
   * dying or cannot start): its owner stops it and starts a new one. Kernel backends repair their
   * devices in reconcile() and call it only for one that cannot be made again (vxlan's IPv6 device
   * over an underlay interface lowered below what IPv6 needs).
   */
  onFailed?: (err: Error) => void;
}

export interface Backend {
  readonly type: BackendType;
  /** MTU for pods (subnet.env's FLANNEL_MTU): underlay MTU minus the encapsulation. */
  readonly mtu: number;
  /** Creates devices and starts forwarding; returns what to announce to peers. */
  start(): Promise<BackendAnnouncement>;
  /**
   * Adds or updates a peer. A peer this backend cannot reach is reported (an error in the log and
   * peersUnreachable), never a silent black hole. Calls made while the kernel is being written
   * are gathered and written together, so calling this for many peers at once costs a few
   * iproute2 calls, not a few per peer. Kernel refusals are logged and counted, and reconcile()
   * tries them again; it rejects only when the backend cannot work at all (stopped, device gone
   * and not re-creatable).
   */
  setPeer(peer: BackendPeer): Promise<void>;
  removePeer(name: string): Promise<void>;
  /**
   * Compares the kernel with the peers it was given and repairs any drift: re-adds missing or
   * wrong entries, removes entries of peers it was not given (only entries this backend owns).
   * Call it after the initial peers are set: before that it would remove a kept device's entries.
   */
  reconcile(): Promise<void>;
  /** Stops; removes devices, routes, neighbours and FDB entries unless `keep`. */
  stop(keep: boolean): Promise<void>;
  counters(): BackendCounters;
  /** Packets, bytes and drops of the userspace dataplane (wasm-vxlan, udp only); per peer when asked. */
  dataplaneCounters?(opts?: { peers?: boolean }): DataplaneCounters;
  /**
   * The userspace dataplane's UDP sockets (wasm-vxlan, udp only): their port and address family,
   * the underlay's (IPv4 for an IPv6 dataplane that rides the IPv4 underlay).
   */
  dataplaneSockets?(): { port: number; family: 4 | 6 };
}
