// The network's subnet slots: flannel's Network / SubnetLen / SubnetMin / SubnetMax turned into a
// numbered list of equal subnets (slot 0 = SubnetMin, last slot = SubnetMax). The lease ring works
// on slot numbers only; this module is the one place that maps them to and from CIDRs.
import { createHash } from "node:crypto";
import { WeftError } from "../../errors.js";
import { formatIpv4, formatPrefix, parseIpv4, parsePrefix, prefixContains, prefixMask, type Ipv4Prefix } from "../../net/ipv4.js";

/** Upper bound on slots, so rings, states and messages stay small (a /16 of /24s is 256). */
export const MAX_SLOTS = 65536;

/** The subnet part of a flannel network config (net-conf.json), same names and meaning. */
export interface NetworkConfig {
  readonly Network: string;
  readonly SubnetLen?: number;
  readonly SubnetMin?: string;
  readonly SubnetMax?: string;
}

export class SubnetSpace {
  /** Hash of the resolved config; states from a node with a different one are refused. */
  readonly fingerprint: string;

  private constructor(
    readonly network: Ipv4Prefix,
    readonly subnetLen: number,
    /** Address of slot 0. */
    readonly subnetMin: number,
    /** Address of the last slot. */
    readonly subnetMax: number,
  ) {
    this.fingerprint = createHash("sha256").update(this.describe()).digest("hex").slice(0, 16);
  }

  /** Resolves flannel's defaults and checks, as flannel's CheckNetworkConfig does (IPv4 only). */
  static fromConfig(config: NetworkConfig): SubnetSpace {
    const network = parsePrefix(config.Network);
    const subnetLen = config.SubnetLen ?? defaultSubnetLen(network);
    if (!Number.isInteger(subnetLen) || subnetLen > 30) {
      throw bad(`SubnetLen ${subnetLen} must be a whole number no larger than 30 (each host needs room for a gateway and pods)`);
    }
    if (subnetLen < network.len + 2) {
      throw bad(`SubnetLen /${subnetLen} is too large for Network ${config.Network}: it must fit at least four subnets (use /${network.len + 2} or longer)`);
    }
    const size = 2 ** (32 - subnetLen);
    // Like flannel, skip the first subnet by default: its first address is the network address.
    const subnetMin = config.SubnetMin === undefined ? network.addr + size : parseIpv4(config.SubnetMin);
    const subnetMax = config.SubnetMax === undefined ? network.addr + 2 ** (32 - network.len) - size : parseIpv4(config.SubnetMax);
    for (const [name, addr] of [["SubnetMin", subnetMin], ["SubnetMax", subnetMax]] as const) {
      if (!prefixContains(network, addr)) throw bad(`${name} ${formatIpv4(addr)} is not inside Network ${config.Network}`);
      if ((addr & ~prefixMask(subnetLen)) !== 0) throw bad(`${name} ${formatIpv4(addr)} is not on a /${subnetLen} boundary`);
    }
    if (subnetMin > subnetMax) throw bad(`SubnetMin ${formatIpv4(subnetMin)} is above SubnetMax ${formatIpv4(subnetMax)}`);
    const space = new SubnetSpace(network, subnetLen, subnetMin, subnetMax);
    if (space.slotCount > MAX_SLOTS) {
      throw bad(`${space.slotCount} subnets between SubnetMin and SubnetMax; weft leases at most ${MAX_SLOTS}: use a shorter SubnetLen or a narrower SubnetMin..SubnetMax`);
    }
    return space;
  }

  get slotCount(): number {
    return (this.subnetMax - this.subnetMin) / this.subnetSize + 1;
  }

  private get subnetSize(): number {
    return 2 ** (32 - this.subnetLen);
  }

  /** The subnet of a slot, as a prefix. */
  prefixOf(slot: number): Ipv4Prefix {
    this.checkSlot(slot);
    return { addr: this.subnetMin + slot * this.subnetSize, len: this.subnetLen };
  }

  /** The subnet of a slot as "198.19.1.0/24". */
  subnetOf(slot: number): string {
    return formatPrefix(this.prefixOf(slot));
  }

  /** The slot of a subnet in CIDR form, or undefined if it is not one of this space's slots. */
  slotOf(cidr: string): number | undefined {
    const p = parsePrefix(cidr);
    if (p.len !== this.subnetLen || p.addr < this.subnetMin || p.addr > this.subnetMax) return undefined;
    return (p.addr - this.subnetMin) / this.subnetSize;
  }

  describe(): string {
    return `Network ${formatPrefix(this.network)} SubnetLen ${this.subnetLen} SubnetMin ${formatIpv4(this.subnetMin)} SubnetMax ${formatIpv4(this.subnetMax)}`;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) {
      throw new WeftError("LEASE_BAD_SLOT", `slot ${slot} is outside 0..${this.slotCount - 1} of ${this.describe()}`);
    }
  }
}

/** flannel: a /24 per host if the network is at least a /22, else four subnets. */
function defaultSubnetLen(network: Ipv4Prefix): number {
  if (network.len > 28) throw bad(`Network ${formatPrefix(network)} is too small: use a /28 or larger`);
  return network.len <= 22 ? 24 : network.len + 2;
}

function bad(message: string): WeftError {
  return new WeftError("LEASE_BAD_NETWORK_CONFIG", `network config: ${message}`);
}
