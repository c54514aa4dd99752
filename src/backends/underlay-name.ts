// The underlay interface may be renamed while the agent runs (udev, systemd-networkd, a cloud
// agent: `ip link set dev X name Y`). Devices, routes and commands name it, so its name is looked
// up again by its index, which a rename keeps, wherever they are checked or made anew.
import type { Logger } from "pino";
import type { Kernel } from "../kernel/iproute.js";
import type { Underlay } from "./backend.js";

/**
 * Sets `underlay.iface` to the interface's current name, in place: the agent and both families'
 * backends hold the one Underlay, so each sees the new name. An index no longer there (the
 * interface deleted) leaves the name, and what names it fails and says so.
 */
export async function followUnderlay(kernel: Kernel, underlay: Underlay, logger: Logger): Promise<void> {
  const links = await kernel.ipJson<Array<{ ifindex: number; ifname: string }>>(["link", "show"]);
  const name = links.find((l) => l.ifindex === underlay.ifindex)?.ifname;
  if (name === undefined || name === underlay.iface) return;
  logger.info(
    { code: "BACKEND_UNDERLAY_RENAMED", from: underlay.iface, to: name, ifindex: underlay.ifindex },
    `the underlay interface ${underlay.iface} was renamed ${name}: the overlay's devices and routes follow it`,
  );
  underlay.iface = name;
}
