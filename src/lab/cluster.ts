// A cluster of hosts on one machine, each host a network namespace, built the way flannel's
// documentation draws it: every host has an underlay interface (eth0) on a shared switch (a
// bridge in a namespace of its own), and, once it has a subnet, a cni0 bridge with pod namespaces
// attached by veth pairs. Used by the demo, the benchmarks and the tests. Addresses: underlay
// 198.18.0.0/24, pods 198.19.0.0/16; with IPv6 also underlay 2001:2::/64 and pods
// 2001:2:0:8000::/49 (RFC 5180's benchmarking range, IPv6's counterpart to 198.18.0.0/15).
import { formatIpv4, type Ipv4Prefix } from "../net/ipv4.js";
import { formatIpv6, type Ipv6Prefix } from "../net/ipv6.js";
import { Netns } from "./netns.js";

export const LAB_UNDERLAY_BASE = 0xc6120000; // 198.18.0.0/24
export const LAB_POD_NETWORK: Ipv4Prefix = { addr: 0xc6130000, len: 16 }; // 198.19.0.0/16
export const LAB_UNDERLAY_BASE6 = 0x20010002n << 96n; // 2001:2::/64
export const LAB_POD_NETWORK6: Ipv6Prefix = { addr: (0x20010002n << 96n) | (0x8000n << 64n), len: 49 }; // 2001:2:0:8000::/49

export interface LabHost {
  /** host1, host2, ... */
  readonly name: string;
  readonly ns: Netns;
  /** The underlay interface inside the host. */
  readonly underlayIf: "eth0";
  readonly underlayAddr: number;
  /** With LabOptions.ipv6: the host's IPv6 underlay address. */
  readonly underlayAddr6?: bigint;
  readonly pods: LabPod[];
}

export interface LabPod {
  readonly name: string;
  readonly ns: Netns;
  readonly host: LabHost;
  readonly addr: number;
  /** Once addPods6 ran: the pod's IPv6 address. */
  addr6?: bigint;
}

export interface LabOptions {
  /** Namespace name tag (weft-<tag>-...). */
  tag: string;
  hosts: number;
  /** Underlay MTU; default 1500. */
  mtu?: number;
  /** Also an IPv6 underlay (2001:2::/64), for dual-stack and IPv6 tests. */
  ipv6?: boolean;
}

export class LabCluster {
  private constructor(
    private readonly tag: string,
    readonly switchNs: Netns,
    readonly hosts: LabHost[],
  ) {}

  /** Builds the switch and the hosts; on failure removes what it made. */
  static async create(opts: LabOptions): Promise<LabCluster> {
    const made: Netns[] = [];
    try {
      const sw = await Netns.create(`${opts.tag}-sw`);
      made.push(sw);
      await sw.kernel.ipBatch(["link add br0 type bridge", "link set br0 up"]);
      const hosts: LabHost[] = [];
      for (let i = 1; i <= opts.hosts; i++) {
        const ns = await Netns.create(`${opts.tag}-h${i}`);
        made.push(ns);
        const addr = LAB_UNDERLAY_BASE + 10 + i;
        await sw.kernel.ipBatch([
          `link add h${i} mtu ${opts.mtu ?? 1500} type veth peer name eth0 netns ${ns.name}`,
          `link set h${i} master br0 up`,
        ]);
        const addr6 = opts.ipv6 ? LAB_UNDERLAY_BASE6 + BigInt(10 + i) : undefined;
        // No duplicate address detection: the lab's addresses are unique, and a tentative address cannot be used.
        await ns.kernel.ipBatch([`addr add ${formatIpv4(addr)}/24 dev eth0`, ...(addr6 !== undefined ? [`addr add ${formatIpv6(addr6)}/64 dev eth0 nodad`] : []), `link set eth0 up`]);
        await ns.kernel.sysctl("net.ipv4.ip_forward", 1);
        if (opts.ipv6) await ns.kernel.sysctl("net.ipv6.conf.all.forwarding", 1);
        hosts.push({ name: `host${i}`, ns, underlayIf: "eth0", underlayAddr: addr, ...(addr6 !== undefined && { underlayAddr6: addr6 }), pods: [] });
      }
      return new LabCluster(opts.tag, sw, hosts);
    } catch (error) {
      await Promise.all(made.map((ns) => ns.destroy()));
      throw error;
    }
  }

  /**
   * Gives a host its cni0 bridge (first address of `subnet`) and `count` pods (the next
   * addresses), as the flannel CNI plugin would, with `mtu` on the pod side.
   */
  async addPods(host: LabHost, subnet: Ipv4Prefix, count: number, mtu: number): Promise<LabPod[]> {
    const gateway = subnet.addr + 1;
    await host.ns.kernel.ipBatch([
      `link add cni0 mtu ${mtu} type bridge`,
      `addr add ${formatIpv4(gateway)}/${subnet.len} dev cni0`,
      `link set cni0 up`,
    ]);
    const pods: LabPod[] = [];
    for (let k = 0; k < count; k++) {
      const n = host.pods.length + 1;
      const ns = await Netns.create(`${this.tag}-${host.name}-p${n}`);
      const addr = gateway + n;
      await host.ns.kernel.ipBatch([
        `link add veth${n} mtu ${mtu} type veth peer name eth0 netns ${ns.name}`,
        `link set veth${n} master cni0 up`,
      ]);
      await ns.kernel.ipBatch([
        `addr add ${formatIpv4(addr)}/${subnet.len} dev eth0`,
        `link set eth0 up`,
        `route add default via ${formatIpv4(gateway)}`,
      ]);
      const pod: LabPod = { name: `${host.name}-pod${n}`, ns, host, addr };
      host.pods.push(pod);
      pods.push(pod);
    }
    return pods;
  }

  /**
   * Gives the host's cni0 and pods (made by addPods) IPv6 addresses of `subnet` too, as the flannel
   * CNI plugin does in dual-stack: the first address for cni0, the next ones for the pods.
   */
  async addPods6(host: LabHost, subnet: Ipv6Prefix): Promise<void> {
    const gateway = subnet.addr + 1n;
    await host.ns.kernel.ipBatch([`addr add ${formatIpv6(gateway)}/${subnet.len} dev cni0 nodad`]);
    for (const [k, pod] of host.pods.entries()) {
      pod.addr6 = gateway + BigInt(k + 1);
      await pod.ns.kernel.ipBatch([`addr add ${formatIpv6(pod.addr6)}/${subnet.len} dev eth0 nodad`, `route add default via ${formatIpv6(gateway)} dev eth0`]);
    }
  }

  /** Removes every namespace of the cluster (pods, hosts, switch) and so every device in them. */
  async destroy(): Promise<void> {
    const all = [...this.hosts.flatMap((h) => h.pods.map((p) => p.ns)), ...this.hosts.map((h) => h.ns), this.switchNs];
    await Promise.all(all.map((ns) => ns.destroy()));
  }

  describe(): string {
    return this.hosts
      .map((h) => `${h.name} ${formatIpv4(h.underlayAddr)} pods ${h.pods.map((p) => formatIpv4(p.addr)).join(", ")}`)
      .join("\n");
  }
}

