// The `vxlan` backend: the kernel's own VXLAN dataplane, programmed as flannel programs it
// (device.ts). With DirectRouting, a peer whose underlay address the kernel reaches without a
// gateway gets a plain route via that address instead (no encapsulation), as in flannel. A device
// left by an earlier run (--keep-on-exit) is reused when its settings match and replaced when
// they do not; a device someone deleted is re-created by the next reconcile. An instance serves one
// address family (BackendContext): IPv6 gets flannel-v6.<VNI>, its own VTEP MAC, and 70 bytes of
// encapsulation over an IPv6 underlay.
import { readAddresses, readLink, readLinks, type LinkState } from "../../kernel/links.js";
import type { PeerEntries } from "../../kernel/converge.js";
import { type RouteEntry, routeMetric } from "../../kernel/entries.js";
import { formatMac, parseMac } from "../../net/ipv4.js";
import { contains as prefixContains, familyOf, formatAddr as formatIpv4, type IpAddr } from "../../net/ip.js";
import {
  DEFAULT_VNI,
  VXLAN_PORT,
  type BackendAnnouncement,
  type BackendContext,
  type BackendOptions,
  type BackendPeer,
} from "../backend.js";
import { KernelBackend, underlayAddr } from "../kernel-backend.js";
import { assertIpv6Mtu, cappedUnderlayMtu, UnderlayMtu } from "../underlay-mtu.js";
import { loadVtepMac } from "../vtep-mac.js";
import {
  createVxlanDevice,
  vxlanDeviceMismatch,
  vxlanDeviceName,
  vxlanPeerEntries,
  type VxlanDeviceSpec,
} from "./device.js";

/** Bytes VXLAN adds to a packet over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_IPV4_UNDERLAY_BYTES = 50;
/** The same over an IPv6 underlay (outer header 40). */
export const VXLAN_IPV6_UNDERLAY_BYTES = 70;

export class VxlanBackend extends KernelBackend {
  /**
   * FLANNEL_MTU as flanneld writes it for vxlan in every mode: the MTU key (default the
   * underlay's) minus 50, also when the device is flannel-v6 (its network's MTU() subtracts one
   * constant overhead, pkg/backend/vxlan/vxlan_network.go). Pods on an IPv6 underlay so get up to
   * 20 bytes more than the device carries (deviceMtu); the kernel answers the excess with Packet Too Big.
   */
  readonly mtu: number;
  /**
   * The device's MTU, as flanneld's ends up: it asks for the MTU key (default the interface's)
   * minus 50 in both families, and the kernel clamps a VXLAN device to its lower device's MTU
   * minus the headroom of the underlay family. So flannel-v6.<VNI> is the interface's MTU minus 70
   * (seen on 6.18: mtu 1450 over a 1500 link gives 1430) unless an MTU key at least 20 below the
   * interface's keeps it at the key minus 50.
   */
  private readonly deviceMtu: number;
  /** deviceMtu, or what the underlay interface carries once its MTU was lowered. */
  private readonly underlayMtu: UnderlayMtu;
  protected readonly entryDevice: string;
  private readonly vni: number;
  private readonly port: number;
  private vtepMac?: Uint8Array;
  private readonly family: 4 | 6;
  /** The underlay address of this family the device sends from. */
  private readonly local: IpAddr;

  constructor(
    private readonly options: BackendOptions,
    ctx: BackendContext,
  ) {
    super("vxlan", ctx);
    this.family = familyOf(ctx.subnet.addr);
    this.vni = options.vni ?? DEFAULT_VNI;
    this.port = options.port ?? VXLAN_PORT;
    // The kernel caps a VXLAN device at its lower device's MTU minus the headroom: an MTU key
    // above the interface's would leave the device below the size asked (found drifted and
    // replaced on every reconcile) and the pods above what it carries.
    const underlayMtu = cappedUnderlayMtu(this.logger, options.mtu, ctx.underlay, `vxlan IPv${this.family}`);
    this.mtu = underlayMtu - VXLAN_IPV4_UNDERLAY_BYTES;
    const headroom = this.family === 4 ? VXLAN_IPV4_UNDERLAY_BYTES : VXLAN_IPV6_UNDERLAY_BYTES;
    this.deviceMtu = this.family === 4 ? this.mtu : Math.min(this.mtu, ctx.underlay.mtu - headroom);
    this.entryDevice = vxlanDeviceName(this.vni, this.family);
    // Named by the bound that gave deviceMtu: an MTU key 20 or more below the interface's, or the interface.
    if (this.family === 6) {
      const keyBound = this.deviceMtu === this.mtu;
      assertIpv6Mtu(
        this.entryDevice,
        this.deviceMtu,
        keyBound ? underlayMtu : ctx.underlay.mtu,
        keyBound ? VXLAN_IPV4_UNDERLAY_BYTES : headroom,
      );
    }
    this.underlayMtu = new UnderlayMtu(
      this.logger,
      this.entryDevice,
      this.deviceMtu,
      ctx.underlay.mtu,
      headroom,
      this.mtu,
      this.family === 6,
    );
    this.local = underlayAddr(ctx);
  }

  protected announcement(): BackendAnnouncement {
    return {
      type: "vxlan",
      vtepMac: this.vtepMac && formatMac(this.vtepMac),
      port: this.port,
      vni: this.vni,
      ...(this.options.gbp ? { gbp: true } : {}),
    };
  }

  protected async setUp(): Promise<void> {
    this.vtepMac = loadVtepMac(this.ctx.stateDir, this.family);
    await this.ensureDevices(this.ctx.underlay.iface);
  }

  protected async tearDown(): Promise<void> {
    if (!this.vtepMac) return; // setUp failed before touching any device: leave a kept one alone
    if (await readLink(this.ctx.kernel, this.entryDevice))
      await this.ctx.kernel.ipBatch([`link del ${this.entryDevice}`]);
  }

  protected async ensureDevices(iface: string): Promise<void> {
    const { kernel } = this.ctx;
    const [link, lower] = await readLinks(kernel, [this.entryDevice, iface]);
    // The MTU is no cause for a mismatch (vxlanDeviceMismatch).
    const mismatch = link && vxlanDeviceMismatch(link, this.spec(iface, this.deviceMtu));
    if (link && !mismatch) {
      await this.fixDevice(link, this.underlayMtu.fitting(lower, link.mtu));
      return;
    }
    // Checked before anything is created. In reconcile the backend cannot go on: its owner
    // replaces it (a mismatched device goes with this one's teardown), and the new one's start is
    // refused alike until the interface's MTU is raised.
    try {
      this.underlayMtu.assertNewDevice(lower);
    } catch (err) {
      this.reportFailed(err as Error);
      throw err;
    }
    const spec = this.spec(iface, this.underlayMtu.fitting(lower, undefined));
    if (link) {
      this.logger.warn(
        { device: this.entryDevice, mismatch },
        `${this.entryDevice} exists with other settings (${mismatch}); replacing it`,
      );
      await kernel.ipBatch([`link del ${this.entryDevice}`]);
    }
    await createVxlanDevice(kernel, spec);
    this.logger.info(
      { device: this.entryDevice, vtepMac: formatMac(spec.vtepMac), mtu: spec.mtu, port: spec.port },
      `created ${this.entryDevice}`,
    );
  }

  protected async plan(peers: BackendPeer[], iface: string): Promise<Map<string, PeerEntries | string>> {
    const direct = this.options.directRouting
      ? await this.directReachProblems(peers, iface)
      : peers.map(() => "DirectRouting is off");
    return new Map(
      peers.map((p, i): [string, PeerEntries] => [
        p.name,
        direct[i] === undefined
          ? {
              route: {
                dst: p.subnet,
                gateway: p.underlay,
                dev: iface,
                onlink: false,
                metric: routeMetric(this.family),
              },
            }
          : vxlanPeerEntries(this.vni, {
              subnet: p.subnet,
              underlay: p.underlay,
              vtepMac: parseMac(p.backend.vtepMac!),
              port: (p.backend.port ?? VXLAN_PORT) === this.port ? undefined : p.backend.port,
            }),
      ]),
    );
  }

  /** Routes on flannel.<VNI>, and direct routes via a gateway on the underlay interface. */
  protected ownsRoute(r: RouteEntry, iface: string): boolean {
    return r.dev === this.entryDevice || (r.gateway !== undefined && r.dev === iface);
  }

  private spec(iface: string, mtu: number): VxlanDeviceSpec {
    return {
      vni: this.vni,
      dev: iface,
      local: this.local,
      port: this.port,
      subnet: this.ctx.subnet,
      vtepMac: this.vtepMac!,
      mtu,
      gbp: this.options.gbp,
      learning: this.options.learning,
    };
  }

  /**
   * A kept device may carry an older lease's address: exactly <subnet network>/32 (/128) of the
   * pod network, up, and at the MTU that fits.
   */
  private async fixDevice(link: LinkState, mtu: number): Promise<void> {
    const { kernel, network, subnet } = this.ctx;
    const dev = this.entryDevice;
    const hostLen = this.family === 4 ? 32 : 128;
    const addrs = await readAddresses(kernel, dev, this.family);
    const lines = addrs
      .filter((a) => prefixContains(network, a.addr) && !(a.addr === subnet.addr && a.len === hostLen))
      .map((a) => `addr del ${formatIpv4(a.addr)}/${a.len} dev ${dev}`);
    if (!addrs.some((a) => a.addr === subnet.addr && a.len === hostLen))
      lines.push(`addr add ${formatIpv4(subnet.addr)}/${hostLen}${this.family === 6 ? " nodad" : ""} dev ${dev}`);
    if (link.mtu !== mtu) lines.push(`link set ${dev} mtu ${mtu}`);
    if (!link.up) lines.push(`link set ${dev} up`);
    if (lines.length === 0) return;
    this.logger.info({ device: dev, commands: lines }, `fixing ${dev}`);
    await kernel.ipBatch(lines);
  }
}
