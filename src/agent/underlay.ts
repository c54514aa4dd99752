// Which interface and addresses carry this host's overlay traffic, chosen as flanneld chooses:
// --iface (names or addresses, IPv4 or IPv6, first match wins), else --iface-regex (over names
// and addresses), else the interface of the default route (IPv6's when IPv4 is off). The chosen
// interface must have a global address of every enabled family (in wasm-vxlan the IPv6 one may be
// missing: IPv6 then rides the IPv4 underlay, in dual-stack and IPv6-only alike); --public-ip and
// --public-ipv6 override the addresses peers send to. Of several global IPv6 addresses, see rankIpv6;
// the one taken is saved in the state dir and kept at later starts (UNDERLAY6_FILE).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { type ErrorCode, WeftError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import type { Underlay } from "../backends/backend.js";
import { followUnderlay } from "../backends/underlay-name.js";
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
  ifindex: number;
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
  ifindex: number;
  mtu: number;
  v4: string[];
  /** Best first (see rankIpv6). */
  v6: string[];
  /** Why v6[0] leads, where the interface has a usable global IPv6 address. */
  v6Choice?: { why: string; skipped: Array<{ addr: string; flags: string[] }> };
  /** The flags that kept the last start's address from leading, where the interface has it. */
  savedFlags?: string[];
}

interface DefaultRoute {
  dev?: string;
  metric?: number;
  /** IPv6: the router preference (RFC 4191) of a route learnt from a router advertisement. */
  pref?: string;
  prefsrc?: string;
  /** dead, linkdown (of a route with a dev of its own). */
  flags?: string[];
  /** ECMP: the devices are here, not in dev. */
  nexthops?: Array<{ dev?: string; flags?: string[] }>;
}

/** Router preferences, most preferred first; a route without one is medium. */
const PREFS = ["high", "medium", "low"];

/** Default routes in the order the kernel prefers them: the lowest metric, then (the default routes of
 *  several routers' advertisements share one metric) the higher router preference. */
const byUse = (a: DefaultRoute, b: DefaultRoute) =>
  (a.metric ?? 0) - (b.metric ?? 0) || PREFS.indexOf(a.pref ?? "medium") - PREFS.indexOf(b.pref ?? "medium");

/** Of default routes, the one the kernel uses. */
const inUse = (routes: DefaultRoute[]): DefaultRoute | undefined => [...routes].sort(byUse)[0];

/** Whether the kernel marks a route or nexthop unusable: dead, or its device without carrier. */
const flagged = (flags?: string[]) => flags?.some((f) => f === "dead" || f === "linkdown") ?? false;

/** The IPv6 underlay address taken at the last start, in the state dir: in IPv6-only mode gossip binds
 *  it, and a --keep-on-exit restart at another address joins late, its old record there held until
 *  declared dead (GOSSIP_JOIN_NAME_HELD). */
export const UNDERLAY6_FILE = "underlay-ipv6";

/** How long a start waits for the saved address to finish DAD before choosing another for this start. */
const SAVED_DAD_WAIT_MS = 5000;

/** The saved address; none where the file is missing or damaged (a first start: the choice is made again). */
async function savedUnderlay6(stateDir: string): Promise<string | undefined> {
  const text = (await readFile(join(stateDir, UNDERLAY6_FILE), "utf8").catch(() => "")).trim();
  return isIpv6Text(text) ? formatIpv6(parseIpv6(text)) : undefined;
}

/**
 * Saves the IPv6 underlay address once gossip is bound to (or announces) it, where it was taken from the
 * interface (weft's choice or the one --iface names, not --public-ipv6): chooseUnderlay keeps it at
 * later starts. A failed save is logged; the next start then chooses again.
 */
export async function saveUnderlay6(
  stateDir: string,
  u: Underlay,
  choice: UnderlayChoice,
  log?: Logger,
): Promise<void> {
  if (u.addr6 === undefined || choice.publicIpv6 !== undefined) return;
  const taken = formatIpv6(u.addr6);
  if ((await savedUnderlay6(stateDir)) === taken) return;
  const file = join(stateDir, UNDERLAY6_FILE);
  await writeFileAtomic(file, `${taken}\n`, { mode: 0o600, dirMode: 0o700 }).catch((err) =>
    log?.warn(
      { code: "AGENT_UNDERLAY_IPV6_SAVE_FAILED", err, file },
      `cannot save the IPv6 underlay address ${taken} in ${file}: the next start chooses again, and may take another`,
    ),
  );
}

/** The underlay; with a state dir, an IPv6 address saved there (saveUnderlay6) is kept while the interface
 *  has it, neither deprecated nor dadfailed (one tentative is waited for, bounded; with waitDad false,
 *  as UnderlayAddressWatch asks inside the agent's serial queue, kept as it is, as the watch counts it held). */
export async function chooseUnderlay(
  kernel: Kernel,
  choice: UnderlayChoice,
  families: UnderlayFamilies = { ipv4: true, ipv6: false },
  opts: { log?: Logger; stateDir?: string; waitDad?: boolean } = {},
): Promise<Underlay> {
  // Not read (nor waited for) where it cannot be taken: --public-ipv6, or --iface naming only IPv6
  // addresses with no --iface-regex to fall back on (whose interface's address it may be).
  const named = choice.iface ?? [];
  const given =
    choice.publicIpv6 !== undefined ||
    (named.length > 0 && named.every(isIpv6Text) && !(choice.ifaceRegex?.length ?? 0));
  const saved =
    opts.stateDir !== undefined && families.ipv6 && !given ? await savedUnderlay6(opts.stateDir) : undefined;
  return choose(kernel, choice, families, saved, opts.log, opts.waitDad ?? true);
}

async function choose(
  kernel: Kernel,
  choice: UnderlayChoice,
  families: UnderlayFamilies,
  saved: string | undefined,
  log: Logger | undefined,
  waitDad: boolean,
): Promise<Underlay> {
  let addrs = await kernel.ipJson<AddrInfo[]>(["addr", "show"]);
  // The saved address re-added at boot is tentative until DAD is done (a second or two), and Linux
  // refuses to bind it (EADDRNOTAVAIL): waited for, bounded, rather than given up for this start.
  const savedTentative = () =>
    saved !== undefined &&
    addrs.some((l) =>
      (l.addr_info ?? []).some((a) => a.tentative && !a.dadfailed && parseIpv6(a.local) === parseIpv6(saved)),
    );
  for (const until = Date.now() + SAVED_DAD_WAIT_MS; waitDad && savedTentative() && Date.now() < until; ) {
    await sleep(100);
    addrs = await kernel.ipJson<AddrInfo[]>(["addr", "show"]);
  }
  // The default route's `src` is the one IPv6 address an admin marks as the host's own; read only
  // where there is a choice to make (and so never on a host without IPv6).
  const several = (l: AddrInfo) =>
    (l.addr_info ?? []).filter((a) => a.family === "inet6" && a.scope === "global" && !a.dadfailed).length > 1;
  const defaultRoutes6 =
    families.ipv6 && addrs.some(several) ? await kernel.ipJson<DefaultRoute[]>(["-6", "route", "show", "default"]) : [];
  // The src of the default route the kernel uses through the device, not a backup's.
  const defaultSrc6 = (dev: string) =>
    inUse(defaultRoutes6.filter((r) => r.dev === dev || r.nexthops?.some((h) => h.dev === dev)))?.prefsrc;
  const links: Link[] = addrs.map((l) => {
    const global = (family: string) => (l.addr_info ?? []).filter((a) => a.family === family && a.scope === "global");
    return {
      iface: l.ifname,
      ifindex: l.ifindex,
      mtu: l.mtu,
      v4: global("inet").map((a) => a.local),
      ...rankIpv6(global("inet6"), defaultSrc6(l.ifname), saved, waitDad),
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
    // Said only where weft chose (not for --public-ipv6, nor an address --iface named), and only a new
    // choice: among several, or one other than the last start's.
    if (
      v6 &&
      v6 !== choice.publicIpv6 &&
      v6 !== preferred &&
      l.v6Choice &&
      (saved === undefined || parseIpv6(v6) !== parseIpv6(saved)) &&
      (saved !== undefined || l.v6.length > 1)
    )
      log?.info(
        {
          code: "AGENT_UNDERLAY_IPV6_CHOSEN",
          iface: l.iface,
          chosen: v6,
          ...(saved !== undefined && { previous: saved }),
          others: l.v6.slice(1),
          ...l.v6Choice,
        },
        saved !== undefined
          ? `the IPv6 underlay address changes from ${saved}, the last start's, which ${l.savedFlags ? `is ${l.savedFlags.join(" and ")} on ${l.iface}` : `is not on ${l.iface}`}, to ${v6}, ${l.v6Choice.why}`
          : `${l.iface} has several usable global IPv6 addresses: the underlay takes ${v6}, ${l.v6Choice.why}`,
      );
    const addr = v4 ? parseIpv4(choice.publicIp ?? first(l.v4)) : undefined;
    const addr6 = v6 ? parseIpv6(v6) : undefined;
    // The interface's own, where --public-ip or --public-ipv6 gives peers others: a rename is
    // followed by them (followUnderlay).
    const own4 = v4 && l.v4.length > 0 ? parseIpv4(first(l.v4)) : addr;
    const own6 = v6 && l.v6.length > 0 ? parseIpv6(first(l.v6)) : addr6;
    return {
      iface: l.iface,
      ifindex: l.ifindex,
      mtu: l.mtu,
      ...(addr !== undefined && { addr }),
      ...(addr6 !== undefined && { addr6 }),
      ...((own4 !== addr || own6 !== addr6) && {
        ownAddrs: { ...(own4 !== addr && { addr: own4 }), ...(own6 !== addr6 && { addr6: own6 }) },
      }),
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
    // The devices of the default routes (not a blackhole's) in the order the kernel prefers them (the
    // one it uses, then backups); of an ECMP one (no dev of its own), its nexthops' as the kernel
    // lists them. flanneld finds no interface there (its lookup reads the route's own device only);
    // the first is the choice that stays put while the route does, where traffic would pick one per
    // flow. Those the kernel marks dead or linkdown (no carrier) come last, not never: at a boot
    // before carrier every one may be, and the agent then starts on the first.
    const candidates = (await kernel.ipJson<DefaultRoute[]>([`-${family}`, "route", "show", "default"]))
      .sort(byUse)
      .flatMap((r) =>
        r.dev !== undefined
          ? [{ dev: r.dev, down: flagged(r.flags) }]
          : (r.nexthops ?? []).flatMap((h) =>
              h.dev !== undefined ? [{ dev: h.dev, down: flagged(r.flags) || flagged(h.flags) }] : [],
            ),
      );
    const link = [...candidates.filter((c) => !c.down), ...candidates.filter((c) => c.down)]
      .map((c) => links.find((l) => l.iface === c.dev && usable(l)))
      .find((l) => l !== undefined);
    if (link) return pick(link);
  }
  throw new WeftError(
    "AGENT_UNDERLAY_NOT_FOUND",
    `no default ${order.map((f) => `IPv${f}`).join(" or ")} route through an interface with a global ${wanted} address to choose the underlay from; pass --iface NAME or --iface ADDRESS (interfaces here: ${describeLinks()})${families.ipv6 === true && !families.ipv4 ? noV6Hint : ""}`,
  );
}

/**
 * An interface's global IPv6 addresses, best first: never one whose DAD failed; the one saved at the
 * last start while it is neither deprecated nor dadfailed, nor tentative where choose() waited for DAD
 * (a change of address delays an IPv6-only --keep-on-exit restart's join); else the default route's
 * `src`; else the first listed, as flanneld takes it and as the kernel breaks ties in its own source
 * choice; a privacy, deprecated or still tentative address only where there is no other.
 */
function rankIpv6(
  addrs: NonNullable<AddrInfo["addr_info"]>,
  defaultSrc: string | undefined,
  saved: string | undefined,
  waitDad: boolean,
): Pick<Link, "v6" | "v6Choice" | "savedFlags"> {
  const usable = addrs.filter((a) => !a.dadfailed);
  const is = (text?: string) => (a: string) => text !== undefined && parseIpv6(a) === parseIpv6(text);
  const savedHere = addrs.find((a) => is(saved)(a.local));
  // Tentative still after the wait in choose(): it cannot be bound (unless not waited for: kept).
  const unkept = waitDad ? (["deprecated", "tentative", "dadfailed"] as const) : (["deprecated", "dadfailed"] as const);
  const savedFlags = savedHere && unkept.filter((f) => savedHere[f]);
  const kept = savedFlags?.length === 0 ? savedHere?.local : undefined;
  const avoided = (a: (typeof usable)[number]) => AVOIDED.some((f) => a[f]);
  const clean = usable.filter((a) => !avoided(a)).map((a) => a.local);
  const src = clean.find(is(defaultSrc));
  const lead = kept ?? src;
  const v6 = [...clean, ...usable.filter(avoided).map((a) => a.local)].filter((a) => a !== lead);
  if (lead !== undefined) v6.unshift(lead);
  if (v6.length === 0) return { v6 };
  return {
    v6,
    ...(savedFlags && { savedFlags }),
    v6Choice: {
      why:
        kept !== undefined
          ? "the last start's (saved in the state dir)"
          : src !== undefined
            ? "the default route's src"
            : v6.length === 1
              ? "the only usable one"
              : clean.length === 0
                ? "the first listed, as none is free of the flags temporary, deprecated and tentative"
                : clean.length > 1
                  ? "the first listed, as flanneld takes (the default route names no src)"
                  : "the only one free of the flags temporary, deprecated and tentative",
      skipped: addrs
        .filter((a) => a.dadfailed || avoided(a))
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

/**
 * How long an underlay address peers send to may be missing from the interface, while a start would
 * take another address of its family, before the agent exits for a restart at that one
 * (UnderlayAddressWatch): long enough for a DHCP renew that removes and re-adds the address, or a
 * link flap whose down flushed IPv6 addresses until SLAAC or networkd gives them back (a few
 * seconds), also where at the up a static address comes back before the watched one.
 */
export const UNDERLAY_ADDRESS_GRACE_MS = 20_000;

/** The agent's exit status after its underlay address changed (EX_TEMPFAIL: a restart is expected to work). */
export const EXIT_UNDERLAY_CHANGED = 75;

type Watched = { family: 4 | 6; addr: string };

/** The errors by which chooseUnderlay says a start would fail, as against a read that failed. */
const CHOICE_VERDICTS: readonly ErrorCode[] = ["AGENT_UNDERLAY_NOT_FOUND", "CONFIG_FLAG_INVALID"];

/**
 * Watches the underlay addresses peers send to that weft took from the interface (not
 * --public-ip or --public-ipv6, which may be a NAT's), as they are read once, at start. One missing
 * from the interface while a start would take another address of its family (`chooseAgain`, the
 * start's own choice, read-only: DHCP gave another, the interface was made anew with another), both
 * for UNDERLAY_ADDRESS_GRACE_MS, is a change the agent cannot follow in place, its gossip bound to
 * and its record holding the old one: `changed` says so, and the agent exits for a restart. Where a
 * start would fail or take no other address of the family (--iface naming the old address, no address
 * left), a restart would not help: it is warned of once, with the reason. So too where it would take the
 * other family's underlay (IPv6-only wasm-vxlan takes either): a node gossiping over the other family
 * reaches none of its peers, and once there would not come back.
 */
export class UnderlayAddressWatch {
  private readonly watched: Watched[];
  /** performance.now() when each watched address was first seen missing, while it is. */
  private readonly missingSince = new Map<string, number>();
  /** performance.now() when a start would first take another address in place of each watched one
   *  missing, while both hold: the grace counts from here, not from the loss (a link down for long
   *  whose up gives a static address back a moment before the watched one). */
  private readonly replacedSince = new Map<string, number>();
  private readonly warned = new Set<string>();

  constructor(
    private readonly kernel: Kernel,
    private readonly underlay: Underlay,
    choice: UnderlayChoice,
    private readonly chooseAgain: () => Promise<Underlay>,
    private readonly log: Logger,
  ) {
    this.watched = [
      ...(underlay.addr !== undefined && choice.publicIp === undefined
        ? [{ family: 4 as const, addr: formatIpv4(underlay.addr) }]
        : []),
      ...(underlay.addr6 !== undefined && choice.publicIpv6 === undefined
        ? [{ family: 6 as const, addr: formatIpv6(underlay.addr6) }]
        : []),
    ];
  }

  /** Whether a watched address changed past the grace (logged as BACKEND_UNDERLAY_ADDRESS_CHANGED). */
  async changed(): Promise<boolean> {
    if (this.watched.length === 0) return false;
    // The backends' reconcile followed a rename already: this finds it done, one device read.
    const link = await followUnderlay(this.kernel, this.underlay, this.log);
    const { iface } = this.underlay;
    const same = (family: 4 | 6, a: string, b: string) =>
      family === 4 ? parseIpv4(a) === parseIpv4(b) : parseIpv6(a) === parseIpv6(b);
    // Still tentative counts as held: an address re-added is in DAD for a second or two.
    const held = (w: Watched) =>
      (link?.addr_info ?? []).some(
        (a) => !a.dadfailed && a.family === (w.family === 4 ? "inet" : "inet6") && same(w.family, a.local, w.addr),
      );
    const now = performance.now();
    const missing = this.watched.filter((w) => !held(w));
    for (const w of this.watched.filter((w) => !missing.includes(w))) {
      this.missingSince.delete(w.addr);
      this.replacedSince.delete(w.addr);
      this.warned.delete(w.addr);
    }
    if (missing.length === 0) return false;
    for (const w of missing) if (!this.missingSince.has(w.addr)) this.missingSince.set(w.addr, now);
    // What a restart would take: read only while an address is missing (no device read otherwise).
    const next = await this.chooseAgain().catch((err: unknown) =>
      err instanceof Error ? err : new Error(String(err)),
    );
    // A read that failed (`ip`, not the choice's verdict) says nothing of what a start would take: the
    // round is skipped, its grace and once-only warning as they were (one that keeps failing fails
    // followUnderlay's read too, which the reconcile reports).
    if (next instanceof Error && !(next instanceof WeftError && CHOICE_VERDICTS.includes(next.code))) return false;
    const taken = (family: 4 | 6) =>
      next instanceof Error
        ? undefined
        : family === 4
          ? next.addr !== undefined && formatIpv4(next.addr)
          : next.addr6 !== undefined && formatIpv6(next.addr6);
    const changed: Array<Watched & { now: string }> = [];
    for (const w of missing) {
      const since = this.missingSince.get(w.addr)!;
      const other = taken(w.family);
      if (other && !same(w.family, other, w.addr)) {
        const replaced = this.replacedSince.get(w.addr) ?? now;
        this.replacedSince.set(w.addr, replaced);
        if (now - replaced >= UNDERLAY_ADDRESS_GRACE_MS) changed.push({ ...w, now: other });
        continue;
      }
      this.replacedSince.delete(w.addr);
      if (now - since < UNDERLAY_ADDRESS_GRACE_MS || this.warned.has(w.addr)) continue;
      this.warned.add(w.addr);
      const reason =
        next instanceof Error
          ? `a start would fail: ${next.message}`
          : other
            ? `a start would take it on ${next.iface}, where it is now: restart the agent for the overlay to follow it there`
            : w.addr === gossipHost(this.underlay)
              ? `a start would take ${describeUnderlay(next)}, an underlay of the other family, gossip included, which the agent does not restart onto: peers over IPv${w.family} would be out of reach, and it would not move back`
              : `a start would take ${describeUnderlay(next)}, with no IPv${w.family} address`;
      this.log.warn(
        {
          code: "BACKEND_UNDERLAY_ADDRESS_GONE",
          iface,
          addr: w.addr,
          graceMs: UNDERLAY_ADDRESS_GRACE_MS,
          reason,
          ...(next instanceof WeftError && { reasonCode: next.code }),
        },
        `the underlay interface ${iface} no longer holds ${w.addr}, the address peers send this node's traffic to, for ${UNDERLAY_ADDRESS_GRACE_MS / 1000} s, and a restart would not take another IPv${w.family} address (${reason}): this node gets no pod traffic from peers until it is back; the agent runs on, and once a start would take another IPv${w.family} address it exits for a restart at it (BACKEND_UNDERLAY_ADDRESS_CHANGED)`,
      );
    }
    if (changed.length === 0 || next instanceof Error) return false;
    const old = changed.map((w) => w.addr);
    const fresh = changed.map((w) => w.now);
    this.log.error(
      {
        code: "BACKEND_UNDERLAY_ADDRESS_CHANGED",
        iface,
        old,
        now: fresh,
        underlay: describeUnderlay(next),
        graceMs: UNDERLAY_ADDRESS_GRACE_MS,
      },
      `the underlay interface ${iface} no longer holds ${old.join(" and ")}, the address peers send this node's traffic to, and a start would take ${fresh.join(" and ")} (${describeUnderlay(next)}), both for ${UNDERLAY_ADDRESS_GRACE_MS / 1000} s: the agent stops (as on SIGTERM, but its leave cannot reach peers, gossip being bound to the old address: they declare this node dead, or have) and exits ${EXIT_UNDERLAY_CHANGED}, for its supervisor (systemd's Restart=, the DaemonSet) to start it again, which joins with the new address`,
    );
    return true;
  }
}
