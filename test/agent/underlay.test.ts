// The underlay choice as flanneld makes it, with IPv6: --iface by name or by IPv4/IPv6 address,
// --iface-regex over names and addresses, the interface holding --public-ip(v6) or else the
// default route's, and --public-ip(v6) overriding the address; the interface must have a global address of every enabled family. Real interfaces
// in a namespace of the test's own.
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chooseUnderlay, ifaceRegExp } from "../../src/agent/underlay.js";
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
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["2001:2::7"] }, V6)).toEqual({
      iface: "u6",
      mtu: 1400,
      addr6: parseIpv6("2001:2::7"),
    });
  });

  it("--public-ip without --iface picks the interface holding it, not the default route's (as flanneld)", async () => {
    expect(await chooseUnderlay(ns.kernel, { publicIp: "198.18.0.6" }, V4)).toEqual({
      iface: "u46",
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
      mtu: 1400,
      addr: parseIpv4("198.18.0.99"),
      addr6: parseIpv6("2001:2::99"),
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
      mtu: 1400,
      addr: parseIpv4("198.18.0.5"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"] }, DUAL_V6_IF_PRESENT)).toEqual({
      iface: "u46",
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
      mtu: 1400,
      addr6: parseIpv6("2001:2::6"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u4"] }, V6_OR_V4)).toEqual({
      iface: "u4",
      mtu: 1400,
      addr: parseIpv4("198.18.0.5"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"], publicIp: "198.18.0.6" }, V6_OR_V4)).toEqual({
      iface: "u46",
      mtu: 1400,
      addr: parseIpv4("198.18.0.6"),
    });
    expect(await chooseUnderlay(ns.kernel, { iface: ["u46"], publicIpv6: "2001:2::99" }, V6_OR_V4)).toMatchObject({
      addr6: parseIpv6("2001:2::99"),
    });
    // Without --iface: IPv6's default route first (u6), IPv4's with --public-ip (u4).
    expect(await chooseUnderlay(ns.kernel, {}, V6_OR_V4)).toEqual({
      iface: "u6",
      mtu: 1400,
      addr6: parseIpv6("2001:2::7"),
    });
    expect(await chooseUnderlay(ns.kernel, { publicIp: "198.18.0.5" }, V6_OR_V4)).toEqual({
      iface: "u4",
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
  const logged: Array<Record<string, unknown>> = [];
  const log = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) });

  beforeAll(async () => {
    ns = await Netns.create("uly6");
    // The peer stays down: without carrier, an address added without nodad stays tentative.
    await ns.ip("link add m6 mtu 1400 type veth peer name m6p mtu 1400");
    await ns.ip("link set m6 up");
    // Oldest first, as a host gets them: its own address, one past its preferred lifetime, one in DAD.
    await ns.ip("addr add 2001:2::10/64 dev m6 nodad");
    await ns.ip("addr add 2001:2::11/64 dev m6 nodad preferred_lft 0");
    await ns.ip("addr add 2001:2::13/64 dev m6");
    await ns.ip("-6 route add default dev m6");
    await ns.ip("link add d6 mtu 1400 type veth peer name d6p mtu 1400");
    await ns.ip("link set d6 up");
    await ns.ip("addr add 2001:2::20/64 dev d6 nodad preferred_lft 0");
    await ns.ip("addr add 2001:2::21/64 dev d6 nodad preferred_lft 0");
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  it("takes the oldest usable one, not a newer floating address, nor a deprecated or tentative one, and logs why", async () => {
    const addrs = JSON.parse(await ns.ip("-j -6 addr show dev m6")) as Array<{ addr_info: object[] }>;
    expect(addrs[0]?.addr_info).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ local: "2001:2::11", deprecated: true }),
        expect.objectContaining({ local: "2001:2::13", tentative: true }),
      ]),
    );
    expect(await chooseUnderlay(ns.kernel, {}, V6, log)).toEqual({
      iface: "m6",
      mtu: 1400,
      addr6: parseIpv6("2001:2::10"),
    });
    // A VIP (kube-vip's, keepalived's) added later is listed first by the kernel.
    await ns.ip("addr add 2001:2::12/128 dev m6 nodad");
    logged.length = 0;
    expect(await chooseUnderlay(ns.kernel, { iface: ["m6"] }, V6_OR_V4, log)).toMatchObject({
      addr6: parseIpv6("2001:2::10"),
    });
    expect(logged).toEqual([
      expect.objectContaining({
        code: "AGENT_UNDERLAY_IPV6_CHOSEN",
        iface: "m6",
        chosen: "2001:2::10",
        others: ["2001:2::12", "2001:2::11", "2001:2::13"],
        skipped: [
          { addr: "2001:2::13", flags: ["tentative"] },
          { addr: "2001:2::11", flags: ["deprecated"] },
        ],
        msg: expect.stringMatching(/takes 2001:2::10, the oldest/),
      }),
    ]);
  });

  it("the default route's src wins; an address --iface names or --public-ipv6 wins over both, unlogged", async () => {
    await ns.ip("-6 route replace default dev m6 src 2001:2::12");
    try {
      logged.length = 0;
      expect(await chooseUnderlay(ns.kernel, {}, V6, log)).toMatchObject({ addr6: parseIpv6("2001:2::12") });
      expect(logged).toEqual([
        expect.objectContaining({ chosen: "2001:2::12", msg: expect.stringMatching(/the default route's src$/) }),
      ]);
      logged.length = 0;
      expect(await chooseUnderlay(ns.kernel, { iface: ["2001:2::11"] }, V6, log)).toMatchObject({
        addr6: parseIpv6("2001:2::11"),
      });
      expect(await chooseUnderlay(ns.kernel, { publicIpv6: "2001:2::10" }, V6, log)).toMatchObject({
        iface: "m6",
        addr6: parseIpv6("2001:2::10"),
      });
      expect(logged).toEqual([]);
    } finally {
      await ns.ip("-6 route replace default dev m6");
    }
  });

  it("an interface with deprecated addresses only still has an underlay address: the oldest", async () => {
    expect(await chooseUnderlay(ns.kernel, { iface: ["d6"] }, V6, log)).toEqual({
      iface: "d6",
      mtu: 1400,
      addr6: parseIpv6("2001:2::20"),
    });
  });
});
