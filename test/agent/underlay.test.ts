// The underlay choice as flanneld makes it, with IPv6: --iface by name or by IPv4/IPv6 address,
// --iface-regex over names and addresses, the interface holding --public-ip(v6) or else the
// default route's, and --public-ip(v6) overriding the address; the interface must have a global address of every enabled family. Real interfaces
// in a namespace of the test's own.
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
