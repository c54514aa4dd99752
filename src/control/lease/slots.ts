// The network's subnet slots: flannel's Network / SubnetLen / SubnetMin / SubnetMax (and their
// IPv6* counterparts) turned into a numbered list of equal subnets (slot 0 = SubnetMin, last slot =
// SubnetMax). The lease ring works on slot numbers only; this module is the one place that maps
// them to and from CIDRs. One space per address family; each family has its own ring.
import { createHash } from "node:crypto";
import { WeftError } from "../../errors.js";
import { MAX_SUBNET_LEN } from "../../net/ip.js";
import {
  formatIpv4,
  formatPrefix,
  parseIpv4,
  parsePrefix,
  prefixContains,
  prefixMask,
  type Ipv4Prefix,
} from "../../net/ipv4.js";
import {
  formatIpv6,
  formatPrefix6,
  parseIpv6,
  parsePrefix6,
  prefixContains6,
  prefixMask6,
  type Ipv6Prefix,
} from "../../net/ipv6.js";

/** Upper bound on slots: slot numbers stay exact JavaScript numbers. The ring holds ranges, so
 *  its size follows the number of nodes, not of slots (a /32 of /64s is 2^32 slots). */
export const MAX_SLOTS = 2 ** 48;

export type Family = 4 | 6;

/** What the lease layer needs of a family's subnet space. */
export interface LeaseSpace {
  readonly family: Family;
  /** Hash of the resolved config; states from a node with a different one are refused. */
  readonly fingerprint: string;
  readonly slotCount: number;
  /** The subnet of a slot as CIDR text. */
  subnetOf(slot: number): string;
  /** The slot of a subnet in CIDR form, or undefined if it is not one of this space's slots. */
  slotOf(cidr: string): number | undefined;
  describe(): string;
}

/** The subnet part of a flannel network config (net-conf.json), same names and meaning. */
export interface NetworkConfig {
  readonly Network: string;
  readonly SubnetLen?: number;
  readonly SubnetMin?: string;
  readonly SubnetMax?: string;
}

export class SubnetSpace implements LeaseSpace {
  readonly family = 4 as const;
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
    if (!Number.isInteger(subnetLen) || subnetLen > MAX_SUBNET_LEN[4]) {
      throw bad(
        `SubnetLen ${subnetLen} must be a whole number no larger than ${MAX_SUBNET_LEN[4]} (each host needs room for a gateway and pods)`,
      );
    }
    // A negative length would read as "too large" below.
    if (subnetLen < 0)
      throw bad(
        `SubnetLen ${subnetLen} is not a prefix length: give one from ${network.len + 2} to ${MAX_SUBNET_LEN[4]}, or leave it out for the default`,
      );
    if (subnetLen < network.len + 2) {
      throw bad(
        `SubnetLen /${subnetLen} is too large for Network ${config.Network}: it must fit at least four subnets (use /${network.len + 2} or longer)`,
      );
    }
    const size = 2 ** (32 - subnetLen);
    // Like flannel, skip the first subnet by default: its first address is the network address.
    const subnetMin = config.SubnetMin === undefined ? network.addr + size : parseIpv4(config.SubnetMin);
    const subnetMax =
      config.SubnetMax === undefined ? network.addr + 2 ** (32 - network.len) - size : parseIpv4(config.SubnetMax);
    for (const [name, addr] of [
      ["SubnetMin", subnetMin],
      ["SubnetMax", subnetMax],
    ] as const) {
      if (!prefixContains(network, addr))
        throw bad(`${name} ${formatIpv4(addr)} is not inside Network ${config.Network}`);
      if ((addr & ~prefixMask(subnetLen)) !== 0)
        throw bad(`${name} ${formatIpv4(addr)} is not on a /${subnetLen} boundary`);
    }
    if (subnetMin > subnetMax)
      throw bad(`SubnetMin ${formatIpv4(subnetMin)} is above SubnetMax ${formatIpv4(subnetMax)}`);
    return new SubnetSpace(network, subnetLen, subnetMin, subnetMax);
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

/** flannel's IPv6 keys of net-conf.json, same names and meaning. */
export interface Ipv6NetworkConfig {
  readonly IPv6Network: string;
  readonly IPv6SubnetLen?: number;
  readonly IPv6SubnetMin?: string;
  readonly IPv6SubnetMax?: string;
}

export class Ipv6SubnetSpace implements LeaseSpace {
  readonly family = 6 as const;
  readonly fingerprint: string;
  readonly slotCount: number;
  private readonly subnetSize: bigint;

  private constructor(
    readonly network: Ipv6Prefix,
    readonly subnetLen: number,
    readonly subnetMin: bigint,
    readonly subnetMax: bigint,
  ) {
    this.subnetSize = 1n << BigInt(128 - subnetLen);
    this.slotCount = Number((subnetMax - subnetMin) / this.subnetSize) + 1;
    this.fingerprint = createHash("sha256").update(this.describe()).digest("hex").slice(0, 16);
  }

  /** Resolves flannel's IPv6 defaults and checks, as flannel's CheckNetworkConfig does. */
  static fromConfig(config: Ipv6NetworkConfig): Ipv6SubnetSpace {
    const network = parsePrefix6(config.IPv6Network);
    let subnetLen = config.IPv6SubnetLen;
    if (subnetLen === undefined) {
      if (network.len > 124) throw bad(`IPv6Network ${config.IPv6Network} is too small: use a /124 or larger`);
      subnetLen = network.len <= 62 ? 64 : network.len + 2;
    }
    if (!Number.isInteger(subnetLen) || subnetLen > MAX_SUBNET_LEN[6]) {
      throw bad(
        `IPv6SubnetLen ${subnetLen} must be a whole number no larger than ${MAX_SUBNET_LEN[6]} (each host needs room for a gateway and pods)`,
      );
    }
    if (subnetLen < 0)
      throw bad(
        `IPv6SubnetLen ${subnetLen} is not a prefix length: give one from ${network.len + 2} to ${MAX_SUBNET_LEN[6]}, or leave it out for the default`,
      );
    if (subnetLen < network.len + 2) {
      throw bad(
        `IPv6SubnetLen /${subnetLen} is too large for IPv6Network ${config.IPv6Network}: it must fit at least four subnets (use /${network.len + 2} or longer)`,
      );
    }
    const size = 1n << BigInt(128 - subnetLen);
    const end = network.addr + (1n << BigInt(128 - network.len));
    // Like flannel, skip the first subnet by default.
    const subnetMin = config.IPv6SubnetMin === undefined ? network.addr + size : parseIpv6(config.IPv6SubnetMin);
    const subnetMax = config.IPv6SubnetMax === undefined ? end - size : parseIpv6(config.IPv6SubnetMax);
    for (const [name, addr] of [
      ["IPv6SubnetMin", subnetMin],
      ["IPv6SubnetMax", subnetMax],
    ] as const) {
      if (!prefixContains6(network, addr))
        throw bad(`${name} ${formatIpv6(addr)} is not inside IPv6Network ${config.IPv6Network}`);
      if ((addr & ~prefixMask6(subnetLen)) !== 0n)
        throw bad(`${name} ${formatIpv6(addr)} is not on a /${subnetLen} boundary`);
    }
    if (subnetMin > subnetMax)
      throw bad(`IPv6SubnetMin ${formatIpv6(subnetMin)} is above IPv6SubnetMax ${formatIpv6(subnetMax)}`);
    if ((subnetMax - subnetMin) / size + 1n > BigInt(MAX_SLOTS)) {
      throw bad(
        `${(subnetMax - subnetMin) / size + 1n} subnets between IPv6SubnetMin and IPv6SubnetMax; weft leases at most 2^48: ` +
          `use a shorter IPv6SubnetLen or a narrower IPv6SubnetMin..IPv6SubnetMax`,
      );
    }
    return new Ipv6SubnetSpace(network, subnetLen, subnetMin, subnetMax);
  }

  prefixOf(slot: number): Ipv6Prefix {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) {
      throw new WeftError("LEASE_BAD_SLOT", `slot ${slot} is outside 0..${this.slotCount - 1} of ${this.describe()}`);
    }
    return { addr: this.subnetMin + BigInt(slot) * this.subnetSize, len: this.subnetLen };
  }

  subnetOf(slot: number): string {
    return formatPrefix6(this.prefixOf(slot));
  }

  slotOf(cidr: string): number | undefined {
    const p = parsePrefix6(cidr);
    if (p.len !== this.subnetLen || p.addr < this.subnetMin || p.addr > this.subnetMax) return undefined;
    return Number((p.addr - this.subnetMin) / this.subnetSize);
  }

  describe(): string {
    return `IPv6Network ${formatPrefix6(this.network)} IPv6SubnetLen ${this.subnetLen} IPv6SubnetMin ${formatIpv6(this.subnetMin)} IPv6SubnetMax ${formatIpv6(this.subnetMax)}`;
  }
}

function bad(message: string): WeftError {
  return new WeftError("LEASE_BAD_NETWORK_CONFIG", `network config: ${message}`);
}
