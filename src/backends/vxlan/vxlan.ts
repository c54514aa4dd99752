// The `vxlan` backend: the kernel's own VXLAN dataplane, programmed as flannel programs it
// (device.ts). With DirectRouting, a peer whose underlay address the kernel reaches without a
// gateway gets a plain route via that address instead (no encapsulation), as in flannel. A device
// left by an earlier run (--keep-on-exit) is reused when its settings match and replaced when
// they do not; a device someone deleted is re-created by the next reconcile.
import { readIpv4Addresses, readLink } from "../../kernel/links.js";
import type { PeerEntries } from "../../kernel/converge.js";
import type { RouteEntry } from "../../kernel/entries.js";
import { formatIpv4, formatMac, parseMac, prefixContains } from "../../net/ipv4.js";
import { DEFAULT_VNI, VXLAN_PORT, type BackendAnnouncement, type BackendContext, type BackendOptions, type BackendPeer } from "../backend.js";
import { KernelBackend } from "../kernel-backend.js";
import { loadVtepMac } from "../vtep-mac.js";
import { createVxlanDevice, vxlanDeviceMismatch, vxlanDeviceName, vxlanPeerEntries, type VxlanDeviceSpec } from "./device.js";

/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD = 50;

export class VxlanBackend extends KernelBackend {
  readonly mtu: number;
  protected readonly entryDevice: string;
  private readonly vni: number;
  private readonly port: number;
  private vtepMac?: Uint8Array;

  constructor(private readonly options: BackendOptions, ctx: BackendContext) {
    super("vxlan", ctx);
    this.vni = options.vni ?? DEFAULT_VNI;
    this.port = options.port ?? VXLAN_PORT;
    this.mtu = (options.mtu ?? ctx.underlay.mtu) - VXLAN_OVERHEAD;
    this.entryDevice = vxlanDeviceName(this.vni);
  }

  protected announcement(): BackendAnnouncement {
    return { type: "vxlan", vtepMac: this.vtepMac && formatMac(this.vtepMac), port: this.port, vni: this.vni, ...(this.options.gbp ? { gbp: true } : {}) };
  }

  protected async setUp(): Promise<void> {
    this.vtepMac = loadVtepMac(this.ctx.stateDir);
    await this.ensureDevices();
  }

  protected async tearDown(): Promise<void> {
    if (!this.vtepMac) return; // setUp failed before touching any device: leave a kept one alone
    if (await readLink(this.ctx.kernel, this.entryDevice)) await this.ctx.kernel.ipBatch([`link del ${this.entryDevice}`]);
  }

  protected async ensureDevices(): Promise<void> {
    const { kernel } = this.ctx;
    const spec = this.spec();
    const link = await readLink(kernel, this.entryDevice);
    const mismatch = link && vxlanDeviceMismatch(link, spec);
    if (link && !mismatch) {
      await this.ensureAddress(link.up);
      return;
    }
    if (link) {
      this.logger.warn({ device: this.entryDevice, mismatch }, `${this.entryDevice} exists with other settings (${mismatch}); replacing it`);
      await kernel.ipBatch([`link del ${this.entryDevice}`]);
    }
    await createVxlanDevice(kernel, spec);
    this.logger.info({ device: this.entryDevice, vtepMac: formatMac(spec.vtepMac), mtu: spec.mtu, port: spec.port }, `created ${this.entryDevice}`);
  }

  protected async plan(peers: BackendPeer[]): Promise<Map<string, PeerEntries | string>> {
    const direct = this.options.directRouting ? await this.directReachProblems(peers) : peers.map(() => "DirectRouting is off");
    return new Map(
      peers.map((p, i): [string, PeerEntries] => [
        p.name,
        direct[i] === undefined
          ? { route: { dst: p.subnet, gateway: p.underlay, dev: this.ctx.underlay.iface, onlink: false, metric: 0 } }
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
  protected ownsRoute(r: RouteEntry): boolean {
    return r.dev === this.entryDevice || (r.gateway !== undefined && r.dev === this.ctx.underlay.iface);
  }

  private spec(): VxlanDeviceSpec {
    const { underlay, subnet } = this.ctx;
    return { vni: this.vni, dev: underlay.iface, local: underlay.addr!, port: this.port, subnet, vtepMac: this.vtepMac!, mtu: this.mtu, gbp: this.options.gbp };
  }

  /** A kept device may carry an older lease's address: exactly <subnet network>/32 of the pod network, and up. */
  private async ensureAddress(up: boolean): Promise<void> {
    const { kernel, network, subnet } = this.ctx;
    const dev = this.entryDevice;
    const addrs = await readIpv4Addresses(kernel, dev);
    const lines = addrs
      .filter((a) => prefixContains(network, a.addr) && !(a.addr === subnet.addr && a.len === 32))
      .map((a) => `addr del ${formatIpv4(a.addr)}/${a.len} dev ${dev}`);
    if (!addrs.some((a) => a.addr === subnet.addr && a.len === 32)) lines.push(`addr add ${formatIpv4(subnet.addr)}/32 dev ${dev}`);
    if (!up) lines.push(`link set ${dev} up`);
    if (lines.length === 0) return;
    this.logger.info({ device: dev, commands: lines }, `fixing ${dev}'s address`);
    await kernel.ipBatch(lines);
  }
}
