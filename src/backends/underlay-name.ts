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

interface AddrLink {
  ifindex: number;
  ifname: string;
  addr_info?: Array<{ family: string; local: string }>;
}

/** Whether the device holds one of the underlay's addresses. */
const holds = (l: AddrLink | undefined, underlay: Underlay): l is AddrLink =>
  (l?.addr_info ?? []).some((a) =>
    a.family === "inet"
      ? parseIpv4(a.local) === underlay.addr
      : a.family === "inet6" && parseIpv6(a.local) === underlay.addr6,
  );

/**
 * Sets `underlay.iface` (and `ifindex`) to the interface as it is now, in place: the agent and both
 * families' backends hold the one Underlay, so each sees it. The device at the index, renamed, is
 * followed; else one under the name, made anew, is adopted with its index; either only if it holds
 * the underlay's address. Where neither does, nothing changes, and what names the interface fails
 * and says so.
 */
export async function followUnderlay(kernel: Kernel, underlay: Underlay, logger: Logger): Promise<void> {
  // Most calls find the name still at the index: one device read, not every device's.
  const named = await kernel.ipJson<AddrLink[]>(["addr", "show", "dev", underlay.iface]).then(
    ([l]) => l,
    () => undefined, // no such device
  );
  if (named?.ifindex === underlay.ifindex) return;
  const indexed = (await kernel.ipJson<AddrLink[]>(["addr", "show"])).find((l) => l.ifindex === underlay.ifindex);
  if (holds(indexed, underlay)) {
    logger.info(
      { code: "BACKEND_UNDERLAY_RENAMED", from: underlay.iface, to: indexed.ifname, ifindex: underlay.ifindex },
      `the underlay interface ${underlay.iface} was renamed ${indexed.ifname}: the overlay's devices and routes follow it; give --iface the new name (or the interface's address, or an --iface-regex) for the next start`,
    );
    underlay.iface = indexed.ifname;
  } else if (holds(named, underlay)) {
    logger.info(
      { code: "BACKEND_UNDERLAY_REPLACED", iface: underlay.iface, from: underlay.ifindex, to: named.ifindex },
      `the underlay interface ${underlay.iface} was made anew (ifindex ${underlay.ifindex}, now ${named.ifindex}): the overlay's devices and routes follow it`,
    );
    underlay.ifindex = named.ifindex;
  }
}
