// The underlay interface may be renamed while the agent runs (udev, systemd-networkd, a cloud
// agent: `ip link set dev X name Y`). Devices, routes and commands name it, so its name is looked
// up again by its index, which a rename keeps, wherever they are checked or made anew. An index is
// no identity once the interface is gone (deleted and made again, moved to another netns): the
// kernel may give it to another device (a veth moved in keeps its own), so a device is taken for
// the underlay only while it holds the underlay's address.
import type { Logger } from "pino";
import type { Kernel } from "../kernel/iproute.js";
import { parseIpv4 } from "../net/ipv4.js";
import { parseIpv6 } from "../net/ipv6.js";
import type { Underlay } from "./backend.js";

export interface AddrLink {
  ifindex: number;
  ifname: string;
  addr_info?: Array<{ family: string; local: string; dadfailed?: true }>;
}

/** Whether the device holds an address the underlay is known by: one peers send to, or the
 *  interface's own where --public-ip or --public-ipv6 names another. */
const holds = (l: AddrLink, underlay: Underlay): boolean =>
  (l.addr_info ?? []).some((a) =>
    a.family === "inet"
      ? [underlay.addr, underlay.ownAddrs?.addr].includes(parseIpv4(a.local))
      : a.family === "inet6" && [underlay.addr6, underlay.ownAddrs?.addr6].includes(parseIpv6(a.local)),
  );

/** The name of the device at the index last warned of (BACKEND_UNDERLAY_LOST), so each is warned of once. */
const warned = new WeakMap<Underlay, string>();

/**
 * Sets `underlay.iface` (and `ifindex`) to the interface as it is now, in place: the agent and both
 * families' backends hold the one Underlay, so each sees it. The device at the index, renamed, is
 * followed; else one under the name, made anew, is adopted with its index; either only if it holds
 * the underlay's address. Where neither does, nothing changes (a renamed device at the index is
 * warned of once), and what names the interface fails and says so. Returns the underlay's device as
 * read, with its addresses; none where it is not found.
 */
export async function followUnderlay(
  kernel: Kernel,
  underlay: Underlay,
  logger: Logger,
): Promise<AddrLink | undefined> {
  // Most calls find the name still at the index: one device read, not every device's. The name may
  // be an altname a rename left (`dev` takes those too): the device's own is the one routes show.
  const named = await kernel.ipJson<AddrLink[]>(["addr", "show", "dev", underlay.iface]).then(
    ([l]) => l,
    () => undefined, // no such device
  );
  if (named?.ifindex === underlay.ifindex && named.ifname === underlay.iface) return named;
  const indexed =
    named?.ifindex === underlay.ifindex
      ? named
      : (await kernel.ipJson<AddrLink[]>(["addr", "show"])).find((l) => l.ifindex === underlay.ifindex);
  // Another lane (the other family's backend, the agent's sweep) may have followed it meanwhile.
  if (indexed?.ifname === underlay.iface) return indexed;
  if (indexed && holds(indexed, underlay)) {
    logger.info(
      { code: "BACKEND_UNDERLAY_RENAMED", from: underlay.iface, to: indexed.ifname, ifindex: underlay.ifindex },
      `the underlay interface ${underlay.iface} was renamed ${indexed.ifname}: the overlay's devices and routes follow it; give --iface the new name (or the interface's address, or an --iface-regex) for the next start`,
    );
    underlay.iface = indexed.ifname;
    return indexed;
  }
  if (named && holds(named, underlay)) {
    logger.info(
      { code: "BACKEND_UNDERLAY_REPLACED", iface: underlay.iface, from: underlay.ifindex, to: named.ifindex },
      `the underlay interface ${underlay.iface} was made anew (ifindex ${underlay.ifindex}, now ${named.ifindex}): the overlay's devices and routes follow it`,
    );
    underlay.ifindex = named.ifindex;
    underlay.iface = named.ifname;
    return named;
  }
  if (indexed && warned.get(underlay) !== indexed.ifname) {
    // Else silent: an IPv6 underlay renamed with a down and up loses its address where
    // keep_addr_on_down is 0, and the overlay stays on a name no device has.
    warned.set(underlay, indexed.ifname);
    logger.warn(
      { code: "BACKEND_UNDERLAY_LOST", iface: underlay.iface, device: indexed.ifname, ifindex: underlay.ifindex },
      `the underlay interface ${underlay.iface} is not found: the device at its index ${underlay.ifindex}, now ${indexed.ifname}, holds none of its addresses, so the overlay is not moved to it: if it is the interface renamed (an IPv6 address is flushed at a down where keep_addr_on_down is 0), give it its address back, or restart the agent with --iface naming it`,
    );
  }
}
