// What an overlay device's MTU may be over its underlay, shared by the vxlan backend's device and
// the userspace backends' TUN device: IPv6 needs 1280 at least, and an underlay interface whose
// MTU was lowered while the agent runs carries less than the device was made for.
import type { Logger } from "pino";
import { WeftError } from "../errors.js";
import type { LinkState } from "../kernel/links.js";

/** IPv6's minimum link MTU (RFC 8200): the kernel turns IPv6 off on a device below it and refuses its address. */
export const IPV6_MIN_MTU = 1280;

/**
 * Refuses an IPv6 device below IPV6_MIN_MTU before anything is created: the kernel's bare
 * "Invalid argument" for its address would fail every start, and the pods would get an MTU IPv6
 * cannot use.
 */
export function assertIpv6Mtu(device: string, deviceMtu: number, underlayMtu: number, headroom: number): void {
  if (deviceMtu >= IPV6_MIN_MTU) return;
  throw new WeftError(
    "BACKEND_IPV6_MTU",
    `${device} would get MTU ${deviceMtu} (underlay MTU ${underlayMtu} minus ${headroom} bytes of encapsulation), below the ${IPV6_MIN_MTU} IPv6 needs: raise the underlay MTU to at least ${IPV6_MIN_MTU + headroom} (the interface's, or Backend.MTU), or run the network without IPv6`,
  );
}

/** A device's MTU that follows its underlay interface's down, warning once (until it is back up). */
export class UnderlayMtu {
  private lowered = false;

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
  ) {}

  /**
   * deviceMtu, or less when the underlay interface (`lower`; undefined: not found) has a lower MTU
   * than at start. The vxlan device must follow (the kernel clamps a new one and refuses more to a
   * kept one, so asking for deviceMtu would find it drifted at every reconcile); a TUN device
   * follows so that the kernel answers what no longer fits with ICMP, as over vxlan.
   */
  fitting(lower: LinkState | undefined): number {
    const fits =
      lower && lower.mtu < this.startMtu ? Math.min(this.deviceMtu, lower.mtu - this.headroom) : this.deviceMtu;
    if (fits < this.deviceMtu && !this.lowered)
      this.logger.warn(
        { code: "BACKEND_UNDERLAY_MTU_LOWERED", underlayMtu: lower!.mtu, deviceMtu: fits, podMtu: this.podMtu },
        `${lower!.name}'s MTU is now ${lower!.mtu}, so ${this.device} carries at most ${fits}: the pods' MTU ${this.podMtu} is too large for it. Restart the agent (it writes FLANNEL_MTU anew), then the pods`,
      );
    this.lowered = fits < this.deviceMtu;
    return fits;
  }
}
