// Go's net.IP.IsGlobalUnicast, which the CNI plugins pick a pod interface's addresses by (the
// bridge tears down masquerade rules only for those): vectors from Go's definition, edges included.
import { describe, expect, it } from "vitest";
import { isGlobalUnicast, parseAddr } from "../../src/net/ip.js";

describe("isGlobalUnicast", () => {
  it.each([
    ["198.19.1.2", true],
    ["10.0.0.1", true],
    ["169.253.255.255", true],
    ["169.255.0.0", true],
    ["223.255.255.255", true],
    ["255.255.255.254", true],
    ["2001:2::1", true],
    ["fec0::1", true],
    ["::ffff:198.19.1.2", true],
    ["0.0.0.0", false],
    ["127.0.0.1", false],
    ["127.255.255.255", false],
    ["169.254.0.0", false],
    ["169.254.7.7", false],
    ["169.254.255.255", false],
    ["224.0.0.1", false],
    ["239.255.255.255", false],
    ["255.255.255.255", false],
    ["::", false],
    ["::1", false],
    ["fe80::1", false],
    ["febf:ffff::1", false],
    ["ff02::1", false],
    ["::ffff:169.254.7.7", false],
    ["::ffff:127.0.0.1", false],
    ["::ffff:255.255.255.255", false],
  ])("%s: %s", (text, global) => {
    expect(isGlobalUnicast(parseAddr(text))).toBe(global);
  });
});
