// What an overlay device's MTU may be over its underlay, shared by the vxlan backend's device and
// the userspace backends' TUN device: IPv6 needs 1280 at least, and an underlay interface whose
// MTU was lowered while the agent runs carries less than the device was made for.
import type { Logger } from "pino";
import { WeftError } from "../errors.js";
import type { LinkState } from "../kernel/links.js";
import type { Underlay } from "./backend.js";

/** IPv6's minimum link MTU (RFC 8200): the kernel turns IPv6 off on a device below it and refuses its address. */
export const IPV6_MIN_MTU = 1280;

/**
 * Refuses an IPv6 device below IPV6_MIN_MTU before anything is created: the kernel's bare
 * "Invalid argument" for its address would fail every start, and the pods would get an MTU IPv6
 * cannot use. `iface`: the underlay interface whose MTU alone bounds it (else Backend.MTU may).
 */
export function assertIpv6Mtu(
  device: string,
  deviceMtu: number,
  underlayMtu: number,
  headroom: number,
  iface?: string,
): void {
  if (deviceMtu >= IPV6_MIN_MTU) return;
  const raise = iface ? `${iface}'s MTU` : "the underlay MTU";
  throw new WeftError(
    "BACKEND_IPV6_MTU",
    `${device} would get MTU ${deviceMtu} (underlay MTU ${underlayMtu} minus ${headroom} bytes of encapsulation), below the ${IPV6_MIN_MTU} IPv6 needs: raise ${raise} to at least ${IPV6_MIN_MTU + headroom}${iface ? "" : " (the interface's, or Backend.MTU)"}, or run the network without IPv6`,
  );
}

/** The caps warned of in this process: a backend restarted every 30 s would warn at each. */
const cappedWarned = new Set<string>();

/**
 * The underlay MTU a backend works from: Backend.MTU (flannel's MTU key) or the interface's, but
 * never above the interface's, which bounds the encapsulated packets (the kernel caps a VXLAN
 * device there; a userspace dataplane's larger datagrams would be refused or fragmented). Warns
 * once per `backend` (its Type and family), MTU key and interface MTU.
 */
export function cappedUnderlayMtu(
  logger: Logger,
  configured: number | undefined,
  underlay: Underlay,
  backend: string,
): number {
  if (configured === undefined || configured <= underlay.mtu) return configured ?? underlay.mtu;
  const key = `${backend} ${configured} ${underlay.iface} ${underlay.mtu}`;
  if (cappedWarned.has(key)) return underlay.mtu;
  cappedWarned.add(key);
  logger.warn(
    { code: "BACKEND_MTU_CAPPED", mtu: configured, underlayMtu: underlay.mtu },
    `Backend.MTU ${configured} is above ${underlay.iface}'s MTU ${underlay.mtu}, which bounds the encapsulated packets: using ${underlay.mtu}; raise the interface's MTU first for a larger one`,
  );
  return underlay.mtu;
}

/** A device's MTU that follows its underlay interface's down, warning once (until it is back up). */
export class UnderlayMtu {
  /** What was last warned about: the device follows the underlay, or cannot (IPv6), or neither. */
  private warned: "follows" | "held" | undefined;

  constructor(
    private readonly logger: Logger,
    /** The overlay device, for the warning. */
    private readonly device: string,
    /** The device's MTU as made at start. */
    private readonly deviceMtu: number,
    /** The underlay interface's MTU at start. */
    private readonly startMtu: number,
    /** The encapsulation's bytes. */
    private readonly headroom: number,
    /** The pods' MTU, written at start (FLANNEL_MTU). */
    private readonly podMtu: number,
    /** The device carries IPv6, so it must not go below IPV6_MIN_MTU. */
    private readonly ipv6: boolean,
  ) {}

  /**
   * Refuses, as a start is refused (assertIpv6Mtu), to make an IPv6 vxlan device anew over an
   * underlay interface (`lower`) whose MTU is now too low for it: the kernel clamps a new device
   * to its lower device's MTU minus the headroom, and would refuse its address at every reconcile.
   */
  assertNewDevice(lower: LinkState | undefined): void {
    if (this.ipv6 && lower)
      assertIpv6Mtu(
        this.device,
        Math.min(this.deviceMtu, lower.mtu - this.headroom),
        lower.mtu,
        this.headroom,
        lower.name,
      );
  }

  /**
   * deviceMtu, or less when the underlay interface (`lower`; undefined: not found) has a lower MTU
   * than at start. The vxlan device must follow (the kernel clamps a new one and refuses more to a
   * kept one, so asking for deviceMtu would find it drifted at every reconcile); a TUN device
   * follows so that the kernel answers what no longer fits with ICMP, as over vxlan.
   * An IPv6 device does not follow below IPV6_MIN_MTU: the kernel would take IPv6 off it (address,
   * route, sysctls) and every later reconcile would fail. It keeps its MTU (`current`, at least
   * IPV6_MIN_MTU) instead, the only one a kept vxlan device can have above its lower device's, and
   * its outer datagrams are fragmented, as before the device followed.
   */
  fitting(lower: LinkState | undefined, current: number | undefined): number {
    const follows =
      lower && lower.mtu < this.startMtu ? Math.min(this.deviceMtu, lower.mtu - this.headroom) : this.deviceMtu;
    const held = this.ipv6 && follows < IPV6_MIN_MTU;
    const fits = held ? Math.min(this.deviceMtu, Math.max(IPV6_MIN_MTU, current ?? IPV6_MIN_MTU)) : follows;
    const state = held ? "held" : follows < this.deviceMtu ? "follows" : undefined;
    if (state && state !== this.warned) {
      const fields = {
        code: "BACKEND_UNDERLAY_MTU_LOWERED",
        underlayMtu: lower!.mtu,
        deviceMtu: fits,
        podMtu: this.podMtu,
      };
      if (held)
        this.logger.warn(
          fields,
          `${lower!.name}'s MTU is now ${lower!.mtu}, so ${this.device} would carry ${follows}, below the ${IPV6_MIN_MTU} IPv6 needs: it stays at ${fits}, its outer datagrams fragmented. Raise ${lower!.name}'s MTU to at least ${IPV6_MIN_MTU + this.headroom} (a restart at this one is refused), or run the network without IPv6`,
        );
      else
        this.logger.warn(
          fields,
          `${lower!.name}'s MTU is now ${lower!.mtu}, so ${this.device} carries at most ${fits}: the pods' MTU ${this.podMtu} is too large for it. Restart the agent (it writes FLANNEL_MTU anew), then the pods`,
        );
    }
    this.warned = state;
    return fits;
  }
}
