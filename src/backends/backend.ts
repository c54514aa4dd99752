// One interface for every way weft moves pod traffic between hosts, as flannel has: the agent
// hands a backend its lease and the underlay, then tells it about peers as membership changes.
// Kernel backends (vxlan, host-gw) program the kernel through Kernel (iproute2); userspace
// backends (wasm-vxlan, udp) run the dataplane in src/dataplane.
import type { Logger } from "pino";
import type { Kernel } from "../kernel/iproute.js";
import type { Ipv4Prefix } from "../net/ipv4.js";

export const BACKEND_TYPES = ["vxlan", "host-gw", "udp", "wasm-vxlan"] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

/** The host's side of the underlay: where peers reach it. */
export interface Underlay {
  /** Interface name (e.g. eth0). */
  iface: string;
  /** Address peers send to (flannel's --public-ip). */
  addr: number;
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
}

/** A peer as backends see it: its lease, where it is, what it announced. */
export interface BackendPeer {
  name: string;
  subnet: Ipv4Prefix;
  underlay: number;
  backend: BackendAnnouncement;
}

export interface BackendContext {
  kernel: Kernel;
  /** The whole pod network (flannel's Network). */
  network: Ipv4Prefix;
  /** This node's lease. */
  subnet: Ipv4Prefix;
  underlay: Underlay;
  /** Directory for state kept across restarts (e.g. the VTEP MAC). */
  stateDir: string;
  logger: Logger;
}

export interface Backend {
  readonly type: BackendType;
  /** MTU for pods (subnet.env's FLANNEL_MTU): underlay MTU minus the encapsulation. */
  readonly mtu: number;
  /** Creates devices and starts forwarding; returns what to announce to peers. */
  start(): Promise<BackendAnnouncement>;
  /** Adds or updates a peer. A peer this backend cannot reach is reported, never a silent black hole. */
  setPeer(peer: BackendPeer): Promise<void>;
  removePeer(name: string): Promise<void>;
  /** Compares the kernel with the peers it was given and repairs any drift. */
  reconcile(): Promise<void>;
  /** Stops; removes devices, routes, neighbours and FDB entries unless `keep`. */
  stop(keep: boolean): Promise<void>;
}
