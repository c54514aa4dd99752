// Typed reads of network devices and their IPv4 addresses (`ip -json -details link/addr show`),
// so a backend can tell whether a device it finds is the one it would have created.
import { parseIpv4 } from "../net/ipv4.js";
import type { IpAddr } from "../net/ip.js";
import { parseIpv6 } from "../net/ipv6.js";
import type { Kernel } from "./iproute.js";

export interface LinkState {
  name: string;
  mac: string;
  mtu: number;
  up: boolean;
  /** Device kind (vxlan, veth, tun, ...); undefined for plain devices. */
  kind?: string;
  /** Set for vxlan devices. */
  vxlan?: {
    vni: number;
    local?: IpAddr;
    /** The underlay device it sends through. */
    link?: string;
    port: number;
    learning: boolean;
    gbp: boolean;
  };
}

interface RawLink {
  ifname: string;
  address?: string;
  mtu: number;
  flags?: string[];
  linkinfo?: {
    info_kind?: string;
    info_data?: {
      id?: number;
      local?: string;
      local6?: string;
      link?: string;
      port?: number;
      learning?: boolean;
      /** A presence flag: `true` up to iproute2 6.3, `null` from 6.4 on (a183eba7); absent when off. */
      gbp?: boolean | null;
    };
  };
}

/** The device named `name`, or undefined when there is none. */
export async function readLink(kernel: Kernel, name: string): Promise<LinkState | undefined> {
  return (await readLinks(kernel, [name]))[0];
}

/** The devices named, in that order (undefined where there is none), from one listing. */
export async function readLinks(kernel: Kernel, names: string[]): Promise<Array<LinkState | undefined>> {
  // Listing all links rather than `show dev NAME` keeps "no such device" from being an error.
  const all = await kernel.ipJson<RawLink[]>(["-details", "link", "show"]);
  return names.map((name) => {
    const raw = all.find((l) => l.ifname === name);
    return raw && linkState(raw);
  });
}

function linkState(raw: RawLink): LinkState {
  const info = raw.linkinfo?.info_data;
  return {
    name: raw.ifname,
    mac: raw.address ?? "",
    mtu: raw.mtu,
    up: raw.flags?.includes("UP") ?? false,
    kind: raw.linkinfo?.info_kind,
    vxlan:
      raw.linkinfo?.info_kind === "vxlan" && info
        ? {
            vni: info.id ?? 0,
            local:
              info.local !== undefined
                ? parseIpv4(info.local)
                : info.local6 !== undefined
                  ? parseIpv6(info.local6)
                  : undefined,
            link: info.link,
            port: info.port ?? 0,
            learning: info.learning ?? true,
            gbp: "gbp" in info && info.gbp !== false,
          }
        : undefined,
  };
}

/** The IPv4 addresses on `dev` with their prefix lengths. */
export async function readIpv4Addresses(kernel: Kernel, dev: string): Promise<Array<{ addr: number; len: number }>> {
  const raw = await kernel.ipJson<Array<{ addr_info?: Array<{ family: string; local: string; prefixlen: number }> }>>([
    "-4",
    "addr",
    "show",
    "dev",
    dev,
  ]);
  return raw
    .flatMap((l) => l.addr_info ?? [])
    .filter((a) => a.family === "inet")
    .map((a) => ({ addr: parseIpv4(a.local), len: a.prefixlen }));
}

/** The global and host addresses of `dev` of one family (IPv4 as numbers, IPv6 as bigints). */
export async function readAddresses(
  kernel: Kernel,
  dev: string,
  family: 4 | 6,
): Promise<Array<{ addr: IpAddr; len: number }>> {
  if (family === 4) return readIpv4Addresses(kernel, dev);
  const raw = await kernel.ipJson<
    Array<{ addr_info?: Array<{ family: string; local: string; prefixlen: number; scope: string }> }>
  >(["-6", "addr", "show", "dev", dev]);
  return raw
    .flatMap((l) => l.addr_info ?? [])
    .filter((a) => a.family === "inet6" && a.scope !== "link")
    .map((a) => ({ addr: parseIpv6(a.local), len: a.prefixlen }));
}
