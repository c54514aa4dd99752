// Which interface and address carry this host's overlay traffic, chosen as flanneld chooses:
// --iface (names or addresses, first match wins), else --iface-regex, else the interface of the
// default route; --public-ip overrides the address peers send to.
import { WeftError } from "../errors.js";
import type { Underlay } from "../backends/backend.js";
import type { Kernel } from "../kernel/iproute.js";
import { formatIpv4, parseIpv4 } from "../net/ipv4.js";

export interface UnderlayChoice {
  iface?: string[];
  ifaceRegex?: string[];
  publicIp?: string;
}

interface AddrInfo {
  ifname: string;
  mtu: number;
  addr_info?: Array<{ family: string; local: string; scope: string }>;
}

export async function chooseUnderlay(kernel: Kernel, choice: UnderlayChoice): Promise<Underlay> {
  const links = (await kernel.ipJson<AddrInfo[]>(["-4", "addr", "show"])).map((l) => ({
    iface: l.ifname,
    mtu: l.mtu,
    addrs: (l.addr_info ?? []).filter((a) => a.family === "inet" && a.scope === "global").map((a) => a.local),
  }));
  const pick = (iface: string, addr: string, mtu: number): Underlay => ({
    iface, mtu, addr: parseIpv4(choice.publicIp ?? addr),
  });
  for (const want of choice.iface ?? []) {
    const byName = links.find((l) => l.iface === want && l.addrs.length > 0);
    if (byName) return pick(byName.iface, byName.addrs[0], byName.mtu);
    const byAddr = links.find((l) => l.addrs.includes(want));
    if (byAddr) return pick(byAddr.iface, want, byAddr.mtu);
  }
  for (const re of choice.ifaceRegex ?? []) {
    const r = new RegExp(re);
    for (const l of links) {
      const addr = l.addrs.find((a) => r.test(a)) ?? (r.test(l.iface) ? l.addrs[0] : undefined);
      if (addr) return pick(l.iface, addr, l.mtu);
    }
  }
  if ((choice.iface?.length ?? 0) + (choice.ifaceRegex?.length ?? 0) > 0) {
    const given = [choice.iface?.length && `--iface ${choice.iface.join(",")}`, choice.ifaceRegex?.length && `--iface-regex ${choice.ifaceRegex.join(",")}`].filter(Boolean).join(" or ");
    throw new WeftError("AGENT_UNDERLAY_NOT_FOUND", `no interface with an IPv4 address matches ${given}; interfaces here: ${links.map((l) => `${l.iface} [${l.addrs.join(" ")}]`).join(", ")}`);
  }
  const routes = await kernel.ipJson<Array<{ dev?: string; prefsrc?: string }>>(["-4", "route", "show", "default"]);
  const dev = routes.find((r) => r.dev)?.dev;
  const link = links.find((l) => l.iface === dev && l.addrs.length > 0);
  if (!link) {
    throw new WeftError("AGENT_UNDERLAY_NOT_FOUND", `no default route to choose the underlay interface from; pass --iface NAME or --iface ADDRESS (interfaces here: ${links.map((l) => l.iface).join(", ")})`);
  }
  return pick(link.iface, link.addrs[0], link.mtu);
}

export function describeUnderlay(u: Underlay): string {
  return `${u.iface} ${formatIpv4(u.addr)} mtu ${u.mtu}`;
}
