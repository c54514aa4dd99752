// IPv6 text as Go writes it (flannel's subnet.env goes through Go's net.IP.String()): checked on
// known vectors and, for random addresses, against Node's URL host serializer, which follows the
// same RFC 5952 rules except for IPv4-mapped addresses (Go writes those as plain dotted IPv4).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatHostPort, hostOfHostPort } from "../../src/net/ip.js";
import {
  formatIpv6,
  formatPrefix6,
  parseIpv6,
  parsePrefix6,
  prefixContains6,
  sourceGroup,
} from "../../src/net/ipv6.js";

const viaUrl = (a: bigint) =>
  new URL(
    `http://[${a
      .toString(16)
      .padStart(32, "0")
      .replace(/(.{4})(?!$)/g, "$1:")}]/`,
  ).hostname.slice(1, -1);

/** Addresses rich in zero groups, so that runs and ties of runs come up often. */
const address = fc.oneof(
  fc.bigInt({ min: 0n, max: 0xffffffffn }).map((v) => (0xffffn << 32n) | v),
  fc
    .array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
      minLength: 8,
      maxLength: 8,
    })
    .map((g) => g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n)),
);

describe("IPv6 text", () => {
  it.each([
    ["2001:2::", "2001:2::"],
    ["2001:2:0:8000::1", "2001:2:0:8000::1"],
    ["2001:0002:0000:0000:0001:0000:0000:0001", "2001:2::1:0:0:1"], // the first of two equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single zero group is not shortened
    ["::", "::"],
    ["::1", "::1"],
    ["FE80::A", "fe80::a"],
    ["::ffff:198.18.0.1", "198.18.0.1"], // Go's quirk: IPv4-mapped is written as IPv4
    ["::198.18.0.1", "::c612:1"],
  ])("%s is written %s", (text, want) => {
    expect(formatIpv6(parseIpv6(text))).toBe(want);
  });

  it("formats like RFC 5952 (Node's URL serializer) and parses back", () => {
    fc.assert(
      fc.property(address, (a) => {
        const text = formatIpv6(a);
        if (a >> 32n === 0xffffn) return; // written as IPv4 (Go's quirk, a vector above)
        expect(parseIpv6(text)).toBe(a);
        expect(text).toBe(viaUrl(a));
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    "",
    "1",
    "2001:2",
    "2001:2::1::1",
    "1:2:3:4:5:6:7:8:9",
    "12345::",
    "g::",
    "::1.2.3.256",
    "1:2:3:4:5:6:7::8",
  ])("refuses %j", (text) => {
    expect(() => parseIpv6(text)).toThrow(expect.objectContaining({ code: "NET_BAD_IPV6" }));
  });

  it("parses prefixes and refuses host bits", () => {
    const p = parsePrefix6("2001:2:0:8000::/49");
    expect(formatPrefix6(p)).toBe("2001:2:0:8000::/49");
    expect(prefixContains6(p, parseIpv6("2001:2:0:ffff::1"))).toBe(true);
    expect(prefixContains6(p, parseIpv6("2001:2:0:7fff::1"))).toBe(false);
    expect(() => parsePrefix6("2001:2:0:8000::1/64")).toThrow(/host bits set; did you mean 2001:2:0:8000::\/64/);
    expect(() => parsePrefix6("2001:2::/129")).toThrow(expect.objectContaining({ code: "NET_BAD_PREFIX" }));
  });

  it("takes the host back out of host:port text of either family (the chaos monitor's members)", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 65535 }), (a, port) => {
        expect(hostOfHostPort(formatHostPort(formatIpv6(a), port))).toBe(formatIpv6(a));
      }),
    );
    expect(hostOfHostPort(formatHostPort("198.18.0.10", 7946))).toBe("198.18.0.10");
    expect(hostOfHostPort("[2001:2::a]:7946")).toBe("2001:2::a");
  });

  it("groups connection sources as the per-source caps count them: IPv6 by /64, IPv4-mapped as its IPv4 address", () => {
    // A host adds addresses of its /64 at will: one group.
    expect(sourceGroup("2001:2::1")).toBe(sourceGroup("2001:2::ffff:1"));
    expect(sourceGroup("2001:2::1")).not.toBe(sourceGroup("2001:2:0:1::1"));
    expect(sourceGroup("fe80::1%eth0")).toBe(sourceGroup("fe80::2"));
    // A dual-stack port's IPv4 clients show as ::ffff:a.b.c.d: each its own, the same as on an IPv4 port.
    expect(sourceGroup("::ffff:198.18.0.1")).toBe("198.18.0.1");
    expect(sourceGroup("::FFFF:198.18.0.1")).toBe("198.18.0.1");
    expect(sourceGroup("198.18.0.1")).toBe("198.18.0.1");
    expect(sourceGroup("")).toBe("");
  });
});
