// The underlay choice as flanneld makes it, with IPv6: --iface by name or by IPv4/IPv6 address,
// --iface-regex over names and addresses, the interface holding --public-ip(v6) or else the
// default route's, and --public-ip(v6) overriding the address; the interface must have a global address of every enabled family. Real interfaces
// in a namespace of the test's own.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import {
  chooseUnderlay,
  ifaceRegExp,
  saveUnderlay6,
  UNDERLAY_ADDRESS_GRACE_MS,
  UNDERLAY6_FILE,
  UnderlayAddressWatch,
  type UnderlayChoice,
} from "../../src/agent/underlay.js";
import { Kernel } from "../../src/kernel/iproute.js";
import { checkHost } from "../../src/agent/preflight.js";
import type { Underlay } from "../../src/backends/backend.js";
import { parseNetConf } from "../../src/config/net-conf.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { parseIpv6 } from "../../src/net/ipv6.js";
import { canUseNetns, Netns } from "../support/netns.js";

const V4 = { ipv4: true, ipv6: false };
const DUAL = { ipv4: true, ipv6: true };
const V6 = { ipv4: false, ipv6: true };
/** Dual-stack wasm-vxlan: IPv6 rides the IPv4 underlay where the interface has no IPv6 address. */
const DUAL_V6_IF_PRESENT = { ipv4: true, ipv6: "if-present" } as const;
/** IPv6-only wasm-vxlan: an IPv6 underlay address, or else an IPv4 one. */
const V6_OR_V4 = { ipv4: false, ipv6: "or-ipv4" } as const;

describe.skipIf(!canUseNetns())("underlay choice", () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await Netns.create("uly");
    for (const [dev, addrs] of [
      ["u4", ["198.18.0.5/24"]],
      ["u46", ["198.18.0.6/24", "2001:2::6/64"]],
      ["u6", ["2001:2::7/64"]],
    ] as const) {
      await ns.ip(`link add ${dev} mtu 1400 type veth peer name ${dev}p mtu 1400`);
      await ns.ip(`link set ${dev}p up`);
      for (const a of addrs) await ns.ip(`addr add ${a} dev ${dev}${a.includes(":") ? " nodad" : ""}`);
      await ns.ip(`link set ${dev} up`);
    }
    await ns.ip("route add default dev u4");
    await ns.ip("-6 route add default dev u6");
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  it("--iface by IPv6 address picks the interface holding it", async () => {
    expect(await chooseUnderlay(ns.kernel, { iface: ["2001:2:0::6"] }, V4)).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["2001:2::7"] }, V6)).toEqual({
      iface: "u6",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr6: parseIpv6("2001:2::7"),
    });
  });

  it("--public-ip without --iface picks the interface holding it, not the default route's (as flanneld)", async () => {
    expect(await chooseUnderlay(ns.kernel, { publicIp: "198.18.0.6" }, V4)).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
    });
    expect(await chooseUnderlay(ns.kernel, { publicIpv6: "2001:2::6" }, V6)).toMatchObject({ iface: "u46" });
    // An address no interface holds (a NAT's): the default route's interface, as before.
    expect(await chooseUnderlay(ns.kernel, { publicIp: "198.18.0.99" }, V4)).toMatchObject({ iface: "u4" });
  });

  it("dual-stack needs both families on one interface: the first --iface that has them", async () => {
    expect(await chooseUnderlay(ns.kernel, { iface: ["u4", "u6", "u46"] }, DUAL)).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
      addr6: parseIpv6("2001:2::6"),
    });
    await expect(chooseUnderlay(ns.kernel, { iface: ["u4", "u6"] }, DUAL)).rejects.toThrow(
      /no interface with a global IPv4 and IPv6 address matches --iface u4,u6/,
    );
  });

  it("--iface-regex led by Go's (?i), as a flanneld setup writes it, matches ignoring case", async () => {
    expect(await chooseUnderlay(ns.kernel, { ifaceRegex: ["(?i)^U46$"] }, V4)).toMatchObject({ iface: "u46" });
    expect(ifaceRegExp("(?i)^eth").flags).toBe("i");
    // Only a leading (?i): JavaScript has no inline flags elsewhere, and the preflight says so.
    expect(() => ifaceRegExp("^eth(?i)0")).toThrow(SyntaxError);
  });

  it("--iface-regex over IPv6 addresses; --public-ip and --public-ipv6 override", async () => {
    expect(await chooseUnderlay(ns.kernel, { ifaceRegex: ["^2001:2::7$"] }, V6)).toMatchObject({ iface: "u6" });
    expect(
      await chooseUnderlay(ns.kernel, { iface: ["u46"], publicIp: "198.18.0.99", publicIpv6: "2001:2::99" }, DUAL),
    ).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.99"),
      addr6: parseIpv6("2001:2::99"),
      // What the interface is known by when followed through a rename.
      ownAddrs: { addr: parseIpv4("198.18.0.6"), addr6: parseIpv6("2001:2::6") },
    });
  });

  it("without --iface: the default route's interface, IPv6's when IPv4 is off", async () => {
    expect(await chooseUnderlay(ns.kernel, {}, V4)).toMatchObject({ iface: "u4" });
    expect(await chooseUnderlay(ns.kernel, {}, V6)).toMatchObject({ iface: "u6" });
    // u4 (IPv4's default) has no IPv6 address.
    await expect(chooseUnderlay(ns.kernel, {}, DUAL)).rejects.toThrow(
      expect.objectContaining({ code: "AGENT_UNDERLAY_NOT_FOUND" }),
    );
  });

  it("dual-stack wasm-vxlan takes the IPv4 interface as it is: its IPv6 address where it has one, else none", async () => {
    expect(await chooseUnderlay(ns.kernel, {}, DUAL_V6_IF_PRESENT)).toEqual({
      iface: "u4",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.5"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"] }, DUAL_V6_IF_PRESENT)).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
      addr6: parseIpv6("2001:2::6"),
    });
    // An interface without IPv4 is still refused, and --public-ipv6 still wins.
    await expect(chooseUnderlay(ns.kernel, { iface: ["u6"] }, DUAL_V6_IF_PRESENT)).rejects.toThrow(
      /no interface with a global IPv4 address matches --iface u6/,
    );
    expect(
      await chooseUnderlay(ns.kernel, { iface: ["u4"], publicIpv6: "2001:2::99" }, DUAL_V6_IF_PRESENT),
    ).toMatchObject({ addr6: parseIpv6("2001:2::99") });
  });

  it("IPv6-only wasm-vxlan: the interface's IPv6 address where it has one, else its IPv4 one; --public-ip asks for IPv4", async () => {
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"] }, V6_OR_V4)).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr6: parseIpv6("2001:2::6"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u4"] }, V6_OR_V4)).toEqual({
      iface: "u4",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.5"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"], publicIp: "198.18.0.6" }, V6_OR_V4)).toEqual({
      iface: "u46",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"], publicIpv6: "2001:2::99" }, V6_OR_V4)).toMatchObject({
      addr6: parseIpv6("2001:2::99"),
    });
    // Without --iface: IPv6's default route first (u6), IPv4's with --public-ip (u4).
    expect(await chooseUnderlay(ns.kernel, {}, V6_OR_V4)).toEqual({
      iface: "u6",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr6: parseIpv6("2001:2::7"),
    });
    expect(await chooseUnderlay(ns.kernel, { publicIp: "198.18.0.5" }, V6_OR_V4)).toEqual({
      iface: "u4",
      ifindex: expect.any(Number),
      mtu: 1400,
      addr: parseIpv4("198.18.0.5"),
    });
    // One underlay: both addresses given is refused, and so is --public-ip where IPv6 needs an IPv6 underlay.
    await expect(
      chooseUnderlay(ns.kernel, { iface: ["u46"], publicIp: "198.18.0.6", publicIpv6: "2001:2::6" }, V6_OR_V4),
    ).rejects.toThrow(
      expect.objectContaining({ code: "CONFIG_FLAG_INVALID", message: expect.stringMatching(/not both$/) }),
    );
    await expect(chooseUnderlay(ns.kernel, { iface: ["u46"], publicIp: "198.18.0.6" }, V6)).rejects.toThrow(
      expect.objectContaining({
        code: "CONFIG_FLAG_INVALID",
        message: expect.stringMatching(/give --public-ipv6, or use Backend\.Type wasm-vxlan/),
      }),
    );
    await expect(chooseUnderlay(ns.kernel, { iface: ["u4"] }, V6)).rejects.toThrow(
      /no interface with a global IPv6 address matches --iface u4.*use Backend\.Type wasm-vxlan, which carries IPv6 over an IPv4 underlay too/,
    );
  });
});

describe.skipIf(!canUseNetns())("underlay choice among several IPv6 addresses", () => {
  let ns: Netns;
  let dirs: string;
  const logged: Array<Record<string, unknown>> = [];
  const log = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  let links = 0;
  /** A test's own interface with its addresses added in order, each "ADDR/LEN [flags]" (the kernel
   *  lists the last added first). Its peer stays down: without carrier, an address added without
   *  nodad stays tentative. */
  const iface = async (...addrs: string[]) => {
    const dev = `s6_${links++}`;
    await ns.ip(`link add ${dev} mtu 1400 type veth peer name ${dev}p mtu 1400`);
    await ns.ip(`link set ${dev} up`);
    for (const a of addrs) {
      const [addr, ...flags] = a.split(" ");
      await ns.ip([`addr add ${addr} dev ${dev}`, ...flags].join(" "));
    }
    return dev;
  };
  /** A state dir of the test's own, as an agent's restarts share one. */
  const stateDir = () => mkdtemp(join(dirs, "state-"));
  /** An agent's start in IPv6-only mode: the choice, saved once gossip is bound. */
  const start = async (choice: UnderlayChoice, dir: string) => {
    const u = await chooseUnderlay(ns.kernel, choice, V6, { log, stateDir: dir });
    await saveUnderlay6(dir, u, choice, log);
    return u;
  };

  beforeAll(async () => {
    ns = await Netns.create("uly6");
    dirs = await mkdtemp(join(tmpdir(), "weft-underlay-"));
  });

  afterAll(async () => {
    await ns?.destroy();
    if (dirs) await rm(dirs, { recursive: true, force: true });
  });

  it("without a saved choice takes the first listed usable one, as flanneld, not a deprecated or tentative one, and logs why", async () => {
    // Oldest first: its own address, one past its preferred lifetime, a newer one, one in DAD.
    const dev = await iface(
      "2001:2::10/64 nodad",
      "2001:2::11/64 nodad preferred_lft 0",
      "2001:2::12/64 nodad",
      "2001:2::13/64",
    );
    const addrs = JSON.parse(await ns.ip(`-j -6 addr show dev ${dev}`)) as Array<{ addr_info: object[] }>;
    expect(addrs[0]?.addr_info).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ local: "2001:2::11", deprecated: true }),
        expect.objectContaining({ local: "2001:2::13", tentative: true }),
      ]),
    );
    logged.length = 0;
    expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6, { log })).toEqual({
      iface: dev,
      ifindex: expect.any(Number),
      mtu: 1400,
      addr6: parseIpv6("2001:2::12"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6_OR_V4, { log })).toMatchObject({
      addr6: parseIpv6("2001:2::12"),
    });
    expect(logged).toEqual([
      expect.objectContaining({
        code: "AGENT_UNDERLAY_IPV6_CHOSEN",
        iface: dev,
        chosen: "2001:2::12",
        others: ["2001:2::10", "2001:2::13", "2001:2::11"],
        skipped: [
          { addr: "2001:2::13", flags: ["tentative"] },
          { addr: "2001:2::11", flags: ["deprecated"] },
        ],
        msg: expect.stringMatching(/takes 2001:2::12, the first listed, as flanneld/),
      }),
      expect.objectContaining({ chosen: "2001:2::12" }),
    ]);
  });

  it("keeps the last start's address across a restart after a newer one is added, until it is deprecated", async () => {
    const dir = await stateDir();
    const dev = await iface("2001:2::20/64 nodad", "2001:2::21/64 nodad");
    logged.length = 0;
    expect(await start({ iface: [dev] }, dir)).toMatchObject({
      addr6: parseIpv6("2001:2::21"),
    });
    expect(logged).toEqual([expect.objectContaining({ chosen: "2001:2::21" })]);
    expect(await readFile(join(dir, UNDERLAY6_FILE), "utf8")).toBe("2001:2::21\n");
    // A VIP (kube-vip's, keepalived's) added while the agent ran is listed first by the kernel.
    await ns.ip(`addr add 2001:2::22/64 dev ${dev} nodad`);
    logged.length = 0;
    expect(await start({ iface: [dev] }, dir)).toMatchObject({
      addr6: parseIpv6("2001:2::21"),
    });
    expect(logged).toEqual([]);
    // A kept address that turns deprecated is given up, and the change is said.
    await ns.ip(`addr change 2001:2::21/64 dev ${dev} preferred_lft 0`);
    expect(await start({ iface: [dev] }, dir)).toMatchObject({
      addr6: parseIpv6("2001:2::22"),
    });
    expect(logged).toEqual([
      expect.objectContaining({
        code: "AGENT_UNDERLAY_IPV6_CHOSEN",
        chosen: "2001:2::22",
        previous: "2001:2::21",
        msg: expect.stringMatching(/changes from 2001:2::21/),
      }),
    ]);
    expect(await readFile(join(dir, UNDERLAY6_FILE), "utf8")).toBe("2001:2::22\n");
  });

  it("a saved address still tentative is waited for, then given up for this start (Linux cannot bind it), and why is said", async () => {
    const dir = await stateDir();
    // Re-added at boot, DAD not done: its peer down keeps it tentative.
    const dev = await iface("2001:2::70/64 nodad", "2001:2::71/64");
    await writeFile(join(dir, UNDERLAY6_FILE), "2001:2::71\n");
    logged.length = 0;
    // Before, the tentative saved address was taken, and the start failed binding it.
    expect(await start({ iface: [dev] }, dir)).toMatchObject({ addr6: parseIpv6("2001:2::70") });
    expect(logged).toEqual([
      expect.objectContaining({
        code: "AGENT_UNDERLAY_IPV6_CHOSEN",
        previous: "2001:2::71",
        msg: expect.stringMatching(new RegExp(`which is tentative on ${dev}, to 2001:2::70`)),
      }),
    ]);
    // One on another interface now (moved, or --iface changed) is said to be not on this one.
    const other = await iface("2001:2::72/64 nodad");
    logged.length = 0;
    expect(await start({ iface: [other] }, dir)).toMatchObject({ addr6: parseIpv6("2001:2::72") });
    expect(logged).toEqual([
      expect.objectContaining({ msg: expect.stringMatching(new RegExp(`which is not on ${other}, to 2001:2::72`)) }),
    ]);
    // One whose DAD ends during the wait (carrier comes) is kept.
    const late = await iface("2001:2::73/64 nodad", "2001:2::74/64");
    await writeFile(join(dir, UNDERLAY6_FILE), "2001:2::74\n");
    const chosen = start({ iface: [late] }, dir);
    await ns.ip(`link set ${late}p up`);
    expect(await chosen).toMatchObject({ addr6: parseIpv6("2001:2::74") });
  });

  it("the address watch's choice keeps a saved address still tentative, as the watch counts it held, without waiting for DAD", async () => {
    const dir = await stateDir();
    const dev = await iface("2001:2::75/64 nodad", "2001:2::76/64");
    await writeFile(join(dir, UNDERLAY6_FILE), "2001:2::76\n");
    const reads = vi.spyOn(ns.kernel, "ipJson");
    try {
      expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6, { stateDir: dir, waitDad: false })).toMatchObject({
        addr6: parseIpv6("2001:2::76"),
      });
      // One read of the addresses: the wait reads them every 100 ms, up to 5 s, inside the agent's serial queue.
      expect(reads.mock.calls.filter(([args]) => args.join(" ") === "addr show")).toHaveLength(1);
    } finally {
      reads.mockRestore();
    }
  });

  it("an underlay address weft chose that cannot be bound is not blamed on --iface, which was not given", async () => {
    const conf = parseNetConf(
      JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49" }),
    );
    const flags = {
      healthzIp: "::1",
      metricsIp: "::1",
      gossipPort: 0,
      join: [],
      nodeName: "n",
      reconcileIntervalMs: 5000,
    };
    // Not an address of this host (the probe binds in the test process), as a tentative one is not bindable.
    const underlay = { iface: "lo", ifindex: 1, mtu: 1400, addr6: parseIpv6("2001:2::7f") };
    await expect(checkHost(ns.kernel, flags, conf, underlay)).rejects.toThrow(
      expect.objectContaining({
        code: "CONFIG_ADDRESS_NOT_LOCAL",
        message: expect.stringMatching(/^the underlay address 2001:2::7f: not an address of this host/),
      }),
    );
    await expect(checkHost(ns.kernel, { ...flags, iface: ["lo"] }, conf, underlay)).rejects.toThrow(
      /^--iface 2001:2::7f: not an address/,
    );
  });

  it("a choice it cannot save is logged, and the start goes on", async () => {
    // A state dir that cannot hold the file (a file stands where the dir should be).
    const notDir = join(await stateDir(), "file");
    await writeFile(notDir, "");
    const dev = await iface("2001:2::28/64 nodad");
    logged.length = 0;
    expect(await start({ iface: [dev] }, notDir)).toMatchObject({
      addr6: parseIpv6("2001:2::28"),
    });
    expect(logged).toEqual([expect.objectContaining({ code: "AGENT_UNDERLAY_IPV6_SAVE_FAILED" })]);
  });

  it("a dadfailed address is never taken, nor counted as a choice to log", async () => {
    // The peer is up and holds the address, so that DAD fails on this side.
    const dev = await iface("2001:2::30/64 nodad");
    await ns.ip(`link set ${dev}p up`);
    await ns.ip(`addr add 2001:2::31/64 dev ${dev}p nodad`);
    await ns.ip(`addr add 2001:2::31/64 dev ${dev}`);
    await expect
      .poll(async () => JSON.parse(await ns.ip(`-j -6 addr show dev ${dev}`))[0].addr_info, { timeout: 10_000 })
      .toEqual(expect.arrayContaining([expect.objectContaining({ local: "2001:2::31", dadfailed: true })]));
    logged.length = 0;
    expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6, { log })).toMatchObject({
      addr6: parseIpv6("2001:2::30"),
    });
    expect(logged).toEqual([]);
  });

  it("the src of the lowest-metric default route through the interface wins, not a backup's; ECMP too", async () => {
    const dev = await iface("2001:2::40/64 nodad", "2001:2::41/64 nodad", "2001:2::42/64 nodad");
    const other = await iface("2001:2::43/64 nodad");
    await ns.ip(`-6 route add default dev ${dev} metric 100`);
    await ns.ip(`-6 route add default dev ${dev} metric 200 src 2001:2::40`);
    expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6)).toMatchObject({ addr6: parseIpv6("2001:2::42") });
    await ns.ip(
      `-6 route add default metric 50 src 2001:2::41 nexthop via 2001:2::a1 dev ${dev} nexthop via 2001:2::a2 dev ${other}`,
    );
    logged.length = 0;
    expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6, { log })).toMatchObject({
      addr6: parseIpv6("2001:2::41"),
    });
    expect(logged).toEqual([
      expect.objectContaining({ chosen: "2001:2::41", msg: expect.stringMatching(/the default route's src$/) }),
    ]);
  });

  it("a saved address wins over the default route's src; --iface ADDRESS (saved) and --public-ipv6 (not saved) over both, unlogged", async () => {
    const dir = await stateDir();
    const dev = await iface("2001:2::50/64 nodad", "2001:2::51/64 nodad");
    expect(await start({ iface: [dev] }, dir)).toMatchObject({
      addr6: parseIpv6("2001:2::51"),
    });
    await ns.ip(`-6 route add default dev ${dev} metric 10 src 2001:2::50`);
    logged.length = 0;
    expect(await start({ iface: [dev] }, dir)).toMatchObject({
      addr6: parseIpv6("2001:2::51"),
    });
    expect(await start({ iface: ["2001:2::50"] }, dir)).toMatchObject({
      addr6: parseIpv6("2001:2::50"),
    });
    expect(await readFile(join(dir, UNDERLAY6_FILE), "utf8")).toBe("2001:2::50\n");
    expect(await start({ publicIpv6: "2001:2::51" }, dir)).toMatchObject({
      iface: dev,
      addr6: parseIpv6("2001:2::51"),
    });
    expect(await readFile(join(dir, UNDERLAY6_FILE), "utf8")).toBe("2001:2::50\n");
    expect(logged).toEqual([]);
  });

  it("an interface with deprecated addresses only still has an underlay address: the first listed", async () => {
    const dev = await iface("2001:2::60/64 nodad preferred_lft 0", "2001:2::61/64 nodad preferred_lft 0");
    expect(await chooseUnderlay(ns.kernel, { iface: [dev] }, V6)).toEqual({
      iface: dev,
      ifindex: expect.any(Number),
      mtu: 1400,
      addr6: parseIpv6("2001:2::61"),
    });
  });
});

describe.skipIf(!canUseNetns())("underlay choice by an ECMP default route", () => {
  let ns: Netns;
  /** The ifindex of each of the test's interfaces. */
  const index: Record<string, number> = {};

  beforeAll(async () => {
    ns = await Netns.create("ulyecmp");
    for (const [dev, addr, addr6] of [
      ["ea", "198.18.0.10/25", "2001:2::10/65"],
      ["eb", "198.18.0.130/25", "2001:2::8000:0:0:10/65"],
    ] as const) {
      await ns.ip(`link add ${dev} type veth peer name ${dev}p`);
      await ns.ip(`link set ${dev}p up`);
      await ns.ip(`addr add ${addr} dev ${dev}`);
      await ns.ip(`addr add ${addr6} dev ${dev} nodad`);
      await ns.ip(`link set ${dev} up`);
      [{ ifindex: index[dev] }] = await ns.kernel.ipJson<Array<{ ifindex: number }>>(["link", "show", "dev", dev]);
    }
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  /** Multipath default routes of metric 100 of each family, their first nexthop through ea. */
  const ecmpDefaults = async () => {
    await ns.ip("route replace default metric 100 nexthop via 198.18.0.1 dev ea nexthop via 198.18.0.129 dev eb");
    await ns.ip(
      "-6 route replace default metric 100 nexthop via 2001:2::1 dev ea nexthop via 2001:2::8000:0:0:1 dev eb",
    );
  };

  /** The interfaces taken without --iface, for IPv4 and for IPv6. */
  const taken = async () => [
    (await chooseUnderlay(ns.kernel, {}, V4)).iface,
    (await chooseUnderlay(ns.kernel, {}, V6)).iface,
  ];

  it("without --iface takes the first nexthop's interface of the lowest-metric default route, multipath or not", async () => {
    // Before, a multipath default (its devices in nexthops, none of its own) gave no interface: AGENT_UNDERLAY_NOT_FOUND.
    await ns.ip("route add default metric 100 nexthop via 198.18.0.1 dev ea nexthop via 198.18.0.129 dev eb");
    expect(await chooseUnderlay(ns.kernel, {}, V4)).toEqual({
      iface: "ea",
      ifindex: index.ea,
      mtu: 1500,
      addr: parseIpv4("198.18.0.10"),
    });
    await ns.ip("route replace default metric 100 nexthop via 198.18.0.129 dev eb nexthop via 198.18.0.1 dev ea");
    expect(await chooseUnderlay(ns.kernel, {}, V4)).toMatchObject({ iface: "eb", ifindex: index.eb });
    // A plain default route of lower metric is the one the kernel uses; of higher, a backup.
    await ns.ip("route add default via 198.18.0.1 dev ea metric 50");
    expect(await chooseUnderlay(ns.kernel, {}, V4)).toMatchObject({ iface: "ea" });
    await ns.ip("route del default via 198.18.0.1 dev ea metric 50");
    await ns.ip("route add default via 198.18.0.1 dev ea metric 200");
    expect(await chooseUnderlay(ns.kernel, {}, V4)).toMatchObject({ iface: "eb" });
    await ns.ip("route del default via 198.18.0.1 dev ea metric 200");
  });

  it("IPv6: the first nexthop's interface of a multipath default route", async () => {
    await ns.ip("-6 route add default metric 100 nexthop via 2001:2::1 dev ea nexthop via 2001:2::8000:0:0:1 dev eb");
    try {
      expect(await chooseUnderlay(ns.kernel, {}, V6)).toEqual({
        iface: "ea",
        ifindex: index.ea,
        mtu: 1500,
        addr6: parseIpv6("2001:2::10"),
      });
      await ns.ip(
        "-6 route replace default metric 100 nexthop via 2001:2::8000:0:0:1 dev eb nexthop via 2001:2::1 dev ea",
      );
      expect(await chooseUnderlay(ns.kernel, {}, V6)).toMatchObject({ iface: "eb", ifindex: index.eb });
    } finally {
      await ns.ip("-6 route del default");
    }
  });

  it("passes over a nexthop whose device has no carrier (linkdown) or no usable address", async () => {
    await ecmpDefaults();
    // Before, the first nexthop was taken whatever its state: ea, without carrier as its peer is
    // down (the kernel marks the nexthop linkdown), its addresses still there.
    await ns.ip("link set eap down");
    try {
      expect(await taken()).toEqual(["eb", "eb"]);
    } finally {
      await ns.ip("link set eap up");
      await ns.ip("-6 route del default");
    }
    // A first nexthop on a device without an address (before, none was taken: AGENT_UNDERLAY_NOT_FOUND).
    await ns.ip("link add ec type veth peer name ecp");
    await ns.ip("link set ecp up");
    await ns.ip("link set ec up");
    await ns.ip(
      "route replace default metric 100 nexthop via 198.18.0.200 dev ec onlink nexthop via 198.18.0.1 dev ea",
    );
    expect(await chooseUnderlay(ns.kernel, {}, V4)).toMatchObject({ iface: "ea", ifindex: index.ea });
  });

  it("takes a linkdown or dead one only where no live one has a usable address", async () => {
    // Before, every flagged nexthop was passed over: at a boot before carrier (each nexthop
    // linkdown) AGENT_UNDERLAY_NOT_FOUND, while a single route's own flags were not read, so a
    // linkdown metric-100 route won over a live metric-200 backup.
    await ecmpDefaults();
    await ns.ip("link set eap down");
    await ns.ip("link set ebp down");
    try {
      expect(await taken()).toEqual(["ea", "ea"]);
      await ns.ip("link set ebp up");
      // One route each: ea's, linkdown, at metric 100; eb's a backup at 200.
      for (const [family, viaEa, viaEb] of [
        ["-4", "198.18.0.1", "198.18.0.129"],
        ["-6", "2001:2::1", "2001:2::8000:0:0:1"],
      ]) {
        await ns.ip(`${family} route replace default metric 100 via ${viaEa} dev ea`);
        await ns.ip(`${family} route add default metric 200 via ${viaEb} dev eb`);
      }
      expect(await taken()).toEqual(["eb", "eb"]);
    } finally {
      for (const peer of ["eap", "ebp"]) await ns.ip(`link set ${peer} up`);
      for (const family of ["-4", "-6"]) await ns.ip(`${family} route flush exact default`);
    }
  });

  it("IPv6: of default routes of one metric, as several routers advertise them, the higher router preference", async () => {
    // Before, the first listed was taken, whatever its preference. Routes without a gateway are
    // never merged into one multipath route, as routes learnt from advertisements are not.
    await ns.ip("-6 route add default dev ea metric 1024 pref low");
    await ns.ip("-6 route append default dev eb metric 1024 pref high");
    try {
      expect(await chooseUnderlay(ns.kernel, {}, V6)).toMatchObject({ iface: "eb", ifindex: index.eb });
      await ns.ip("-6 route del default dev eb metric 1024");
      await ns.ip("-6 route append default dev eb metric 1024 pref medium");
      expect(await chooseUnderlay(ns.kernel, {}, V6)).toMatchObject({ iface: "eb", ifindex: index.eb });
    } finally {
      await ns.ip("-6 route flush exact ::/0");
    }
  });
});

describe.skipIf(!canUseNetns())("underlay address watch", () => {
  let ns: Netns;
  let links = 0;
  const logged: Array<Record<string, unknown>> = [];
  const log = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  /** The watch's clock (performance.now), moved by the test: the grace is 20 s. */
  let clock = 0;
  /** A test's own interface with the addresses given, and the watch of the underlay a start takes on it. */
  const watching = async (
    families: typeof V4 | typeof V6_OR_V4,
    chooseAgain: (choice: UnderlayChoice) => Promise<Underlay>,
    ...addrs: string[]
  ) => {
    const dev = `w${links++}`;
    await ns.ip(`link add ${dev} mtu 1400 type veth peer name ${dev}p mtu 1400`);
    await ns.ip(`link set ${dev}p up`);
    await ns.ip(`link set ${dev} up`);
    for (const a of addrs) await ns.ip(`addr add ${a} dev ${dev} nodad`);
    const choice = { iface: [dev] };
    const underlay = await chooseUnderlay(ns.kernel, choice, families);
    return {
      dev,
      underlay,
      watch: new UnderlayAddressWatch(ns.kernel, underlay, choice, () => chooseAgain(choice), log),
    };
  };
  const gone = () => logged.filter((l) => l.code === "BACKEND_UNDERLAY_ADDRESS_GONE");

  beforeAll(async () => {
    ns = await Netns.create("ulyw");
  });

  beforeEach(() => {
    vi.spyOn(performance, "now").mockImplementation(() => clock);
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  it("a read that fails while another address comes neither restarts the grace nor stops the exit", async () => {
    let failing = false;
    // A real `ip` failure: a namespace that does not exist.
    const broken = new Kernel({ netns: `${ns.name}-gone` });
    const { dev, watch } = await watching(
      V4,
      (choice) => chooseUnderlay(failing ? broken : ns.kernel, choice, V4),
      "198.18.0.20/24",
    );
    // DHCP gives another address.
    await ns.ip(`addr del 198.18.0.20/24 dev ${dev}`);
    await ns.ip(`addr add 198.18.0.21/24 dev ${dev} nodad`);
    clock = 0;
    expect(await watch.changed()).toBe(false);
    failing = true;
    clock = UNDERLAY_ADDRESS_GRACE_MS / 2;
    expect(await watch.changed()).toBe(false);
    failing = false;
    clock = UNDERLAY_ADDRESS_GRACE_MS;
    // Before, the failed read ended the count: the grace started again here.
    expect(await watch.changed()).toBe(true);
  });

  it("a failure that is not the choice's verdict is not warned of as one, nor does it use up the once-only warning", async () => {
    let failing = false;
    const { dev, watch } = await watching(
      V4,
      (choice) => (failing ? Promise.reject(new Error("some bug")) : chooseUnderlay(ns.kernel, choice, V4)),
      "198.18.0.22/24",
    );
    await ns.ip(`addr del 198.18.0.22/24 dev ${dev}`);
    logged.length = 0;
    clock = 0;
    expect(await watch.changed()).toBe(false);
    failing = true;
    clock = UNDERLAY_ADDRESS_GRACE_MS;
    expect(await watch.changed()).toBe(false);
    expect(gone()).toEqual([]);
    failing = false;
    clock = UNDERLAY_ADDRESS_GRACE_MS + 1;
    expect(await watch.changed()).toBe(false);
    expect(gone()).toEqual([
      expect.objectContaining({
        addr: "198.18.0.22",
        reasonCode: "AGENT_UNDERLAY_NOT_FOUND",
        reason: expect.stringContaining("a start would fail: no interface"),
      }),
    ]);
  });

  it("IPv6-only wasm-vxlan: an IPv4 underlay address gone where a start would take an IPv6 underlay is warned of as that, not followed", async () => {
    const { dev, watch, underlay } = await watching(
      V6_OR_V4,
      (choice) => chooseUnderlay(ns.kernel, choice, V6_OR_V4),
      "198.18.0.30/24",
    );
    expect(underlay).toMatchObject({ addr: parseIpv4("198.18.0.30") });
    await ns.ip(`addr add 2001:2::30/64 dev ${dev} nodad`);
    await ns.ip(`addr del 198.18.0.30/24 dev ${dev}`);
    logged.length = 0;
    clock = 0;
    expect(await watch.changed()).toBe(false);
    clock = UNDERLAY_ADDRESS_GRACE_MS;
    expect(await watch.changed()).toBe(false);
    clock = 2 * UNDERLAY_ADDRESS_GRACE_MS;
    expect(await watch.changed()).toBe(false);
    // Before, the warning said a restart would take no other address, where a start takes the IPv6 one.
    expect(gone()).toEqual([
      expect.objectContaining({
        addr: "198.18.0.30",
        reason: expect.stringMatching(
          /would take .*2001:2::30.*, an underlay of the other family, gossip included, which the agent does not restart onto/,
        ),
        msg: expect.stringContaining("a restart would not take another IPv4 address"),
      }),
    ]);
  });
});
