// Which of the host's addresses and routes a Network (and an IPv6Network) may overlap: the rules of checkNetworkAgainstHost
// on their own, one case a line (the agent-level corpus in config.test.ts runs them in namespaces).
import { describe, expect, it } from "vitest";
import { checkNetworkAgainstHost, type HostPrefix } from "../../src/agent/preflight.js";
import { Ipv6SubnetSpace, SubnetSpace } from "../../src/control/lease/slots.js";
import { parseIpv4, parsePrefix } from "../../src/net/ipv4.js";
import { parseIpv6, parsePrefix6 } from "../../src/net/ipv6.js";

const conf = { space: SubnetSpace.fromConfig({ Network: "198.19.0.0/16" }) }; // SubnetLen 24
const underlay = { iface: "eth0", ifindex: 2, addr: parseIpv4("198.18.0.1"), mtu: 1500 };
const route = (dst: string, dev: string, via?: string): HostPrefix => ({
  prefix: parsePrefix(dst),
  dev,
  kind: "route",
  via,
});
const address = (net: string, dev: string): HostPrefix => ({ prefix: parsePrefix(net), dev, kind: "address" });

describe("a Network against the host's addresses and routes", () => {
  it.each<[string, HostPrefix, string | null]>([
    ["the underlay's own network", route("198.18.0.0/24", "eth0"), null],
    ["the default route", route("0.0.0.0/0", "eth0", "198.18.0.254"), null],
    ["an aggregate via a gateway (a VPN's)", route("198.16.0.0/14", "tun0", "198.18.0.254"), null],
    ["the CNI bridge's pod subnet", address("198.19.3.0/24", "cni0"), null],
    ["a host-gw peer route", route("198.19.4.0/24", "eth0", "198.18.0.2"), null],
    ["a vxlan peer route", route("198.19.5.0/24", "flannel.1", "198.19.5.0"), null],
    ["the userspace backend's route", route("198.19.0.0/16", "weft.1"), null],
    ["an on-link network around it", route("198.16.0.0/14", "eth1"), "overlaps the host's route 198.16.0.0/14 on eth1"],
    [
      "an on-link network inside it",
      route("198.19.128.0/20", "eth1"),
      "overlaps the host's route 198.19.128.0/20 on eth1: pod routes would take traffic meant for it; pick a Network",
    ],
    // kube-flannel's leftovers where the cluster's node mask is /23: named as node subnets, with the SubnetLen that fits.
    [
      "the CNI bridge's /23 (kube-flannel's node subnet)",
      address("198.19.2.0/23", "cni0"),
      "overlaps the host's address 198.19.2.0/23 on cni0, a node subnet /23 where SubnetLen is 24: if the cluster's node subnets are /23 (kube-flannel's follow kube-controller-manager's --node-cidr-mask-size (-ipv4 on a dual-stack cluster)), set SubnetLen to 23 in net-conf.json; else pick a Network",
    ],
    [
      "a host-gw peer route to a /23",
      route("198.19.4.0/23", "eth0", "198.18.0.2"),
      "overlaps the host's route 198.19.4.0/23 on eth0, a node subnet /23 where SubnetLen is 24: if the cluster's node subnets are /23",
    ],
    [
      "cni0's on-link route to its /23",
      route("198.19.2.0/23", "cni0"),
      "overlaps the host's route 198.19.2.0/23 on cni0, a node subnet /23 where SubnetLen is 24",
    ],
    [
      "a /17 via a gateway (no SubnetLen of a /16 Network fits it)",
      route("198.19.0.0/17", "eth0", "198.18.0.2"),
      "overlaps the host's route 198.19.0.0/17 on eth0: pod routes would take traffic meant for it",
    ],
    [
      "an address inside it on another device",
      address("198.19.2.0/23", "eth1"),
      "overlaps the host's address 198.19.2.0/23 on eth1: pod routes would take traffic meant for it",
    ],
    [
      "a foreign route inside it, via a gateway",
      route("198.19.64.0/18", "eth0", "198.18.0.9"),
      "overlaps the host's route 198.19.64.0/18 on eth0",
    ],
    [
      "an address whose network covers it",
      address("198.16.0.0/14", "eth1"),
      "overlaps the host's address 198.16.0.0/14 on eth1",
    ],
  ])("%s", (_what, host, refused) => {
    const check = () => checkNetworkAgainstHost(conf, underlay, [host]);
    if (refused === null) expect(check).not.toThrow();
    else
      expect(check).toThrow(
        expect.objectContaining({
          code: "CONFIG_NETWORK_OVERLAPS_HOST",
          message: expect.stringContaining(`Network 198.19.0.0/16 (net-conf.json) ${refused}`),
        }),
      );
  });

  it("refuses a Network holding the underlay address, naming both", () => {
    expect(() =>
      checkNetworkAgainstHost({ space: SubnetSpace.fromConfig({ Network: "198.18.0.0/16" }) }, underlay, []),
    ).toThrow(
      expect.objectContaining({
        code: "CONFIG_NETWORK_OVERLAPS_HOST",
        message: expect.stringMatching(
          /^Network 198\.18\.0\.0\/16 \(net-conf\.json\) contains the underlay address 198\.18\.0\.1 on eth0/,
        ),
      }),
    );
  });
});

describe("an IPv6Network against the host's IPv6 addresses and routes (the same rules, per family)", () => {
  const conf6 = { space6: Ipv6SubnetSpace.fromConfig({ IPv6Network: "2001:2:0:8000::/49" }) }; // IPv6SubnetLen 64
  const underlay6 = { iface: "eth0", ifindex: 2, addr6: parseIpv6("2001:2::1"), mtu: 1500 };
  const route6 = (dst: string, dev: string, via?: string): HostPrefix => ({
    prefix: parsePrefix6(dst),
    dev,
    kind: "route",
    via,
  });
  const address6 = (net: string, dev: string): HostPrefix => ({ prefix: parsePrefix6(net), dev, kind: "address" });

  it.each<[string, HostPrefix, string | null]>([
    ["the underlay's own network", route6("2001:2::/64", "eth0"), null],
    ["link-local addresses", address6("fe80::/64", "eth0"), null],
    ["the default route", route6("::/0", "eth0", "2001:2::fe"), null],
    ["an aggregate via a gateway", route6("2001:2::/48", "tun0", "2001:2::fe"), null],
    ["the CNI bridge's pod subnet", address6("2001:2:0:8003::/64", "cni0"), null],
    ["a host-gw peer route", route6("2001:2:0:8004::/64", "eth0", "2001:2::2"), null],
    ["a vxlan peer route", route6("2001:2:0:8005::/64", "flannel-v6.1", "2001:2:0:8005::"), null],
    ["an IPv4 route over the same digits", route("198.19.0.0/16", "eth1"), null],
    ["an on-link network around it", route6("2001:2::/48", "eth1"), "overlaps the host's route 2001:2::/48 on eth1"],
    [
      "an on-link network inside it",
      route6("2001:2:0:c000::/52", "eth1"),
      "overlaps the host's route 2001:2:0:c000::/52 on eth1",
    ],
    [
      "the CNI bridge's /63 (kube-flannel's node subnet)",
      address6("2001:2:0:8002::/63", "cni0"),
      "overlaps the host's address 2001:2:0:8002::/63 on cni0, a node subnet /63 where IPv6SubnetLen is 64: if the cluster's node subnets are /63 (kube-flannel's follow kube-controller-manager's --node-cidr-mask-size-ipv6), set IPv6SubnetLen to 63 in net-conf.json; else pick an IPv6Network",
    ],
    [
      "an address whose network covers it",
      address6("2001:2::/47", "eth1"),
      "overlaps the host's address 2001:2::/47 on eth1",
    ],
  ])("%s", (_what, host, refused) => {
    const check = () => checkNetworkAgainstHost(conf6, underlay6, [host]);
    if (refused === null) expect(check).not.toThrow();
    else
      expect(check).toThrow(
        expect.objectContaining({
          code: "CONFIG_NETWORK_OVERLAPS_HOST",
          message: expect.stringContaining(`IPv6Network 2001:2:0:8000::/49 (net-conf.json) ${refused}`),
        }),
      );
  });

  it("refuses an IPv6Network holding the IPv6 underlay address; with both families each network is checked", () => {
    expect(() =>
      checkNetworkAgainstHost({ space6: Ipv6SubnetSpace.fromConfig({ IPv6Network: "2001:2::/48" }) }, underlay6, []),
    ).toThrow(
      expect.objectContaining({
        message: expect.stringMatching(
          /^IPv6Network 2001:2::\/48 \(net-conf\.json\) contains the underlay address 2001:2::1 on eth0: .*\(ip -6 addr, ip -6 route\)$/,
        ),
      }),
    );
    const both = { ...conf, ...conf6 };
    const dual = { ...underlay, ...underlay6 };
    expect(() =>
      checkNetworkAgainstHost(both, dual, [route("198.19.0.0/20", "eth1"), route6("2001:2::/64", "eth0")]),
    ).toThrow(/^Network 198\.19\.0\.0\/16/);
    expect(() =>
      checkNetworkAgainstHost(both, dual, [route("198.18.0.0/24", "eth0"), route6("2001:2:0:8000::/56", "eth1")]),
    ).toThrow(/^IPv6Network 2001:2:0:8000::\/49/);
  });
});
