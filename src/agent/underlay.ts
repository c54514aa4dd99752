// Which interface and addresses carry this host's overlay traffic, chosen as flanneld chooses:
// --iface (names or addresses, IPv4 or IPv6, first match wins), else --iface-regex (over names
// and addresses), else the interface of the default route (IPv6's when IPv4 is off). The chosen
// interface must have a global address of every enabled family (in wasm-vxlan the IPv6 one may be
// missing: IPv6 then rides the IPv4 underlay, in dual-stack and IPv6-only alike); --public-ip and
// --public-ipv6 override the addresses peers send to. Of several global IPv6 addresses, see rankIpv6.
import type { Logger } from "pino";
import { WeftError } from "../errors.js";
import type { Underlay } from "../backends/backend.js";
import type { Kernel } from "../kernel/iproute.js";
import { formatIpv4, parseIpv4 } from "../net/ipv4.js";
import { formatIpv6, isIpv6Text, parseIpv6 } from "../net/ipv6.js";

export interface UnderlayChoice {
  iface?: string[];
  ifaceRegex?: string[];
  publicIp?: string;
  publicIpv6?: string;
}

/**
 * An --iface-regex as a JavaScript RegExp. flanneld's are Go's (RE2), and the one Go form a
 * flanneld setup commonly carries that JavaScript lacks is a leading (?i): it becomes the i flag.
 * Nothing else is translated.
 */
export function ifaceRegExp(text: string): RegExp {
  return text.startsWith("(?i)") ? new RegExp(text.slice(4), "i") : new RegExp(text);
}

/**
 * The families the network config enables. "if-present": IPv6 on, its underlay address optional
 * (dual-stack wasm-vxlan). "or-ipv4": IPv6 only, over an IPv6 underlay address or else an IPv4 one
 * (IPv6-only wasm-vxlan): --public-ipv6 asks for IPv6, --public-ip for IPv4; without either an
 * interface's IPv6 address is taken where it has one, else its IPv4 address.
 */
export interface UnderlayFamilies {
  readonly ipv4: boolean;
  readonly ipv6: boolean | "if-present" | "or-ipv4";
}

interface AddrInfo {
  ifname: string;
  mtu: number;
  addr_info?: Array<{ family: string; local: string; scope: string } & Partial<Record<Avoided | "dadfailed", true>>>;
}

/** IPv6 address flags (as `ip -json` keys) of an address that may go away or not be this node's own
 *  for long: a privacy address, one past its preferred lifetime, one still in (or failing) DAD. */
const AVOIDED = ["temporary", "deprecated", "tentative"] as const;
type Avoided = (typeof AVOIDED)[number];

interface Link {
  iface: string;
  mtu: number;
  v4: string[];
  /** Best first (see rankIpv6). */
  v6: string[];
  /** Why v6[0] leads, where the interface has more than one global IPv6 address. */
  v6Choice?: { why: string; skipped: Array<{ addr: string; flags: string[] }> };
}

export async function chooseUnderlay(
  kernel: Kernel,
  choice: UnderlayChoice,
  families: UnderlayFamilies = { ipv4: true, ipv6: false },
  log?: Logger,
): Promise<Underlay> {
  const addrs = await kernel.ipJson<AddrInfo[]>(["addr", "show"]);
  // The default route's `src` is the one IPv6 address an admin marks as the host's own; read only
  // where there is a choice to make (and so never on a host without IPv6).
  const several = (l: AddrInfo) =>
    (l.addr_info ?? []).filter((a) => a.family === "inet6" && a.scope === "global").length > 1;
  const defaultSrc6 =
    families.ipv6 && addrs.some(several)
      ? await kernel.ipJson<Array<{ dev?: string; prefsrc?: string }>>(["-6", "route", "show", "default"])
      : [];
  const links: Link[] = addrs.map((l) => {
    const global = (family: string) => (l.addr_info ?? []).filter((a) => a.family === family && a.scope === "global");
    return {
      iface: l.ifname,
      mtu: l.mtu,
      v4: global("inet").map((a) => a.local),
      ...rankIpv6(global("inet6"), defaultSrc6.find((r) => r.dev === l.ifname && r.prefsrc)?.prefsrc),
    };
  });
  const orIpv4 = families.ipv6 === "or-ipv4";
  if (!families.ipv4 && choice.publicIp !== undefined && (!orIpv4 || choice.publicIpv6 !== undefined)) {
    throw new WeftError(
      "CONFIG_FLAG_INVALID",
      orIpv4
        ? `--public-ip ${choice.publicIp} and --public-ipv6 ${choice.publicIpv6}: with EnableIPv4 false the IPv6 dataplane rides one underlay; give --public-ipv6 for an IPv6 underlay or --public-ip for an IPv4 one, not both`
        : `--public-ip ${choice.publicIp}: EnableIPv4 is false and this backend carries IPv6 over an IPv6 underlay only; give --public-ipv6, or use Backend.Type wasm-vxlan, which carries IPv6 over an IPv4 underlay too`,
    );
  }
  /** IPv6-only wasm-vxlan: whether IPv6 rides this interface's IPv4 address. */
  const v6OverV4 = (l: Link) =>
    orIpv4 && choice.publicIpv6 === undefined && (choice.publicIp !== undefined || l.v6.length === 0);
  const wanted = orIpv4
    ? choice.publicIpv6 !== undefined
      ? "IPv6"
      : choice.publicIp !== undefined
        ? "IPv4"
        : "IPv6 or IPv4"
    : [families.ipv4 && "IPv4", families.ipv6 === true && "IPv6"].filter(Boolean).join(" and ");
  const usable = (l: Link) =>
    orIpv4
      ? (v6OverV4(l) ? l.v4 : l.v6).length > 0
      : (!families.ipv4 || l.v4.length > 0) && (families.ipv6 !== true || l.v6.length > 0);
  /** The interface's addresses, with `preferred` first where it is one of them. */
  const pick = (l: Link, preferred?: string): Underlay => {
    const first = (list: string[]) => (preferred !== undefined && list.includes(preferred) ? preferred : list[0]);
    const v4 = families.ipv4 || v6OverV4(l);
    const v6 = families.ipv6 && !v6OverV4(l) && (choice.publicIpv6 ?? first(l.v6));
    // Said only where weft chose: not for --public-ipv6, nor an address --iface named.
    if (v6 && v6 !== choice.publicIpv6 && v6 !== preferred && l.v6Choice)
      log?.info(
        { code: "AGENT_UNDERLAY_IPV6_CHOSEN", iface: l.iface, chosen: v6, others: l.v6.slice(1), ...l.v6Choice },
        `${l.iface} has several global IPv6 addresses: the underlay takes ${v6}, ${l.v6Choice.why}`,
      );
    return {
      iface: l.iface,
      mtu: l.mtu,
      ...(v4 && { addr: parseIpv4(choice.publicIp ?? first(l.v4)) }),
      ...(v6 && { addr6: parseIpv6(v6) }),
    };
  };
  const sameAddr = (a: string, b: string) => (isIpv6Text(a) && isIpv6Text(b) ? parseIpv6(a) === parseIpv6(b) : a === b);
  for (const want of choice.iface ?? []) {
    const byName = links.find((l) => l.iface === want && usable(l));
    if (byName) return pick(byName);
    const byAddr = links.find((l) => usable(l) && [...l.v4, ...l.v6].some((a) => sameAddr(a, want)));
    if (byAddr)
      return pick(
        byAddr,
        [...byAddr.v4, ...byAddr.v6].find((a) => sameAddr(a, want)),
      );
  }
  for (const re of choice.ifaceRegex ?? []) {
    const r = ifaceRegExp(re);
    for (const l of links.filter(usable)) {
      const addr = [...l.v4, ...l.v6].find((a) => r.test(a));
      if (addr !== undefined || r.test(l.iface)) return pick(l, addr);
    }
  }
  const describeLinks = () => links.map((l) => `${l.iface} [${[...l.v4, ...l.v6].join(" ")}]`).join(", ");
  if ((choice.iface?.length ?? 0) + (choice.ifaceRegex?.length ?? 0) > 0) {
    const given = [
      choice.iface?.length && `--iface ${choice.iface.join(",")}`,
      choice.ifaceRegex?.length && choice.ifaceRegex.map((re) => `--iface-regex ${re}`).join(" or "),
    ]
      .filter(Boolean)
      .join(" or ");
    throw new WeftError(
      "AGENT_UNDERLAY_NOT_FOUND",
      `no interface with a global ${wanted} address matches ${given}; interfaces here: ${describeLinks()}${families.ipv6 === true && !families.ipv4 ? noV6Hint : ""}`,
    );
  }
  // As flanneld: with --public-ip (--public-ipv6) and no --iface, the interface that holds it, so
  // that a VXLAN device, host-gw's routes and the MTU follow the address peers send to, not the
  // default route's interface.
  for (const addr of families.ipv4 || orIpv4 ? [choice.publicIp, choice.publicIpv6] : [choice.publicIpv6]) {
    const holder =
      addr === undefined
        ? undefined
        : links.find((l) => usable(l) && [...l.v4, ...l.v6].some((a) => sameAddr(a, addr)));
    if (holder) return pick(holder);
  }
  // IPv6's default route when IPv4 is off; IPv6-only wasm-vxlan falls back to IPv4's (first with --public-ip).
  const order: Array<4 | 6> = families.ipv4
    ? [4]
    : orIpv4 && choice.publicIpv6 === undefined
      ? choice.publicIp !== undefined
        ? [4]
        : [6, 4]
      : [6];
  for (const family of order) {
    const routes = await kernel.ipJson<Array<{ dev?: string }>>([`-${family}`, "route", "show", "default"]);
    const dev = routes.find((r) => r.dev)?.dev;
    const link = links.find((l) => l.iface === dev && usable(l));
    if (link) return pick(link);
  }
  throw new WeftError(
    "AGENT_UNDERLAY_NOT_FOUND",
    `no default ${order.map((f) => `IPv${f}`).join(" or ")} route through an interface with a global ${wanted} address to choose the underlay from; pass --iface NAME or --iface ADDRESS (interfaces here: ${describeLinks()})${families.ipv6 === true && !families.ipv4 ? noV6Hint : ""}`,
  );
}

/**
 * An interface's global IPv6 addresses, best first: never one whose DAD failed; the default route's
 * `src`, else the oldest (the kernel lists the newest first, and an address added after boot is as
 * likely a floating VIP, kube-vip's or keepalived's, that moves away); a privacy, deprecated or still
 * tentative address only where there is no other.
 */
function rankIpv6(addrs: NonNullable<AddrInfo["addr_info"]>, defaultSrc?: string): Pick<Link, "v6" | "v6Choice"> {
  const usable = addrs.filter((a) => !a.dadfailed);
  const oldestFirst = (list: typeof usable) => list.map((a) => a.local).reverse();
  const clean = oldestFirst(usable.filter((a) => !AVOIDED.some((f) => a[f])));
  const avoided = usable.filter((a) => AVOIDED.some((f) => a[f]));
  const src = defaultSrc === undefined ? undefined : clean.find((a) => parseIpv6(a) === parseIpv6(defaultSrc));
  const v6 = [...(src !== undefined ? [src] : []), ...clean.filter((a) => a !== src), ...oldestFirst(avoided)];
  if (addrs.length < 2 || v6.length === 0) return { v6 };
  return {
    v6,
    v6Choice: {
      why:
        clean.length === 0
          ? "the oldest, as none is free of the flags temporary, deprecated and tentative"
          : src !== undefined
            ? "the default route's src"
            : clean.length > 1
              ? "the oldest (the default route names no src)"
              : "the only one free of the flags temporary, deprecated, tentative and dadfailed",
      skipped: addrs
        .filter((a) => a.dadfailed || AVOIDED.some((f) => a[f]))
        .map((a) => ({ addr: a.local, flags: [...AVOIDED, "dadfailed" as const].filter((f) => a[f]) })),
    },
  };
}

/** IPv6-only on a backend that needs an IPv6 underlay: which backend does without one. */
const noV6Hint =
  "; this backend carries IPv6 over an IPv6 underlay only: give the interface a global IPv6 address (or --public-ipv6), or use Backend.Type wasm-vxlan, which carries IPv6 over an IPv4 underlay too";

/** The address gossip binds: the IPv4 underlay address where there is one (also IPv6-only wasm-vxlan over an
 *  IPv4 underlay), else the IPv6 one. */
export function gossipHost(u: Underlay): string {
  return u.addr !== undefined ? formatIpv4(u.addr) : formatIpv6(u.addr6!);
}

export function describeUnderlay(u: Underlay): string {
  return [
    u.iface,
    u.addr !== undefined && formatIpv4(u.addr),
    u.addr6 !== undefined && formatIpv6(u.addr6),
    `mtu ${u.mtu}`,
  ]
    .filter(Boolean)
    .join(" ");
}
