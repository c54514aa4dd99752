// A cluster of hosts on one machine, each host a network namespace, built the way flannel's
// documentation draws it: every host has an underlay interface (eth0) on a shared switch (a
// bridge in a namespace of its own), and pods, each a namespace of its own, made as a container
// runtime makes them: through the CNI plugins (weft's flannel plugin, the reference bridge,
// host-local and portmap), which give the host its cni0 bridge. Used by the demo, the benchmarks
// and the tests. Addresses: underlay 198.18.0.0/24, pods 198.19.0.0/16; with IPv6 also underlay
// 2001:2::/64 and pods 2001:2:0:8000::/49 (RFC 5180's benchmarking range, IPv6's counterpart to
// 198.18.0.0/15).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { writeSubnetEnv } from "../agent/subnet-env.js";
import { installPlugin } from "../cni/install.js";
import { CniRuntime, type Attachment, type CniResult, type ConfList } from "../cni/runtime.js";
import { WeftError } from "../errors.js";
import { formatIpv4, parseIpv4, type Ipv4Prefix } from "../net/ipv4.js";
import { formatIpv6, parseIpv6, type Ipv6Prefix } from "../net/ipv6.js";
import { hookExit, Netns } from "./netns.js";
import { makeTempDir, removeTempDir } from "./temp-dirs.js";

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
  /** Its ifindex (Underlay.ifindex). */
  readonly underlayIfindex: number;
  readonly underlayAddr: number;
  /** With LabOptions.ipv6: the host's IPv6 underlay address. */
  readonly underlayAddr6?: bigint;
  readonly pods: LabPod[];
}

export interface LabPod {
  readonly name: string;
  readonly ns: Netns;
  readonly host: LabHost;
  /** The IPv4 address the plugins gave. Reading it on a pod of an IPv6-only node (no
   *  FLANNEL_SUBNET, so no IPv4 address) throws LAB_POD_NO_ADDRESS: such a pod has only addr6. */
  readonly addr: number;
  /** With a subnet.env with FLANNEL_IPV6_* (dual-stack, IPv6-only): the IPv6 address the plugins gave. */
  readonly addr6?: bigint;
  /** How the runtime named it to the CNI plugins (container id = namespace name). */
  readonly attachment: Attachment;
  /** The CNI ADD result. */
  readonly result: CniResult;
  readonly subnetFile: string;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: "tcp" | "udp";
}

/** Where Debian (containernetworking-plugins) and upstream put the reference plugins. */
export function referencePluginDirs(): string[] {
  return ["/usr/lib/cni", "/opt/cni/bin"].filter((d) => existsSync(join(d, "bridge")));
}

/** kube-flannel.yml's cni-conf.json, with the lab's paths. */
export function labConfList(hostDir: string, subnetFile: string): ConfList {
  return {
    name: "cbr0",
    cniVersion: "1.0.0",
    plugins: [
      {
        type: "flannel",
        subnetFile,
        dataDir: join(hostDir, "flannel"),
        ipam: { dataDir: join(hostDir, "ipam") },
        delegate: { hairpinMode: true, isDefaultGateway: true, ipMasq: false },
      },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  };
}

export interface LabOptions {
  /** Namespace name tag (weft-<tag>-...). */
  tag: string;
  hosts: number;
  /** Underlay MTU; default 1500. */
  mtu?: number;
  /**
   * Also an IPv6 underlay (2001:2::/64), for dual-stack and IPv6 tests; "pods-only": hosts forward
   * IPv6 for their pods but have no IPv6 underlay address (IPv6 over the IPv4 underlay).
   */
  ipv6?: boolean | "pods-only";
}

export class LabCluster {
  private readonly podCount = new Map<LabHost, number>();

  private constructor(
    private readonly tag: string,
    readonly switchNs: Netns,
    readonly hosts: LabHost[],
    /** CNI plugin launcher, per-host CNI state; removed with the cluster. */
    readonly workDir: string,
  ) {}

  /** Builds the switch and the hosts; on failure removes what it made. */
  static async create(opts: LabOptions): Promise<LabCluster> {
    const made: Netns[] = [];
    // The namespaces' hook before the work dir: Ctrl-C while the plugin is installed, before the
    // first namespace, found no handler, killed the process without 'exit' and left the dir.
    hookExit();
    const workDir = makeTempDir("weft-lab-cni-");
    try {
      await installPlugin(join(workDir, "bin"));
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
        const addr6 = opts.ipv6 === true ? LAB_UNDERLAY_BASE6 + BigInt(10 + i) : undefined;
        // No duplicate address detection: the lab's addresses are unique, and a tentative address cannot be used.
        await ns.kernel.ipBatch([
          `addr add ${formatIpv4(addr)}/24 dev eth0`,
          ...(addr6 !== undefined ? [`addr add ${formatIpv6(addr6)}/64 dev eth0 nodad`] : []),
          `link set eth0 up`,
        ]);
        const [{ ifindex }] = await ns.kernel.ipJson<Array<{ ifindex: number }>>(["link", "show", "dev", "eth0"]);
        await ns.kernel.sysctl("net.ipv4.ip_forward", 1);
        if (opts.ipv6) await ns.kernel.sysctl("net.ipv6.conf.all.forwarding", 1);
        hosts.push({
          name: `host${i}`,
          ns,
          underlayIf: "eth0",
          underlayIfindex: ifindex,
          underlayAddr: addr,
          ...(addr6 !== undefined && { underlayAddr6: addr6 }),
          pods: [],
        });
      }
      return new LabCluster(opts.tag, sw, hosts, workDir);
    } catch (error) {
      await Promise.all(made.map((ns) => ns.destroy()));
      removeTempDir(workDir);
      throw error;
    }
  }

  /**
   * Gives a host `count` pods in `subnet` with `mtu`, without an agent: writes the host's
   * subnet.env as an agent would (ip-masq off) and adds the pods through the CNI plugins.
   */
  async addPods(host: LabHost, subnet: Ipv4Prefix, count: number, mtu: number): Promise<LabPod[]> {
    const file = join(this.hostDir(host), "subnet.env");
    await writeSubnetEnv(file, { v4: { network: LAB_POD_NETWORK, subnet }, mtu, ipMasq: false });
    return this.addPodsFromSubnetFile(host, file, count);
  }

  /** Adds `count` pods to a host, one after another, from the subnet.env at `subnetFile`. */
  async addPodsFromSubnetFile(host: LabHost, subnetFile: string, count: number): Promise<LabPod[]> {
    const pods: LabPod[] = [];
    for (let k = 0; k < count; k++) pods.push(await this.addPod(host, subnetFile));
    return pods;
  }

  /**
   * Adds one pod the way a container runtime does: a new network namespace, then CNI ADD of the
   * host's network config list (weft's flannel plugin delegating to bridge and host-local, then
   * portmap), run inside the host's namespace. The pod gets the address the plugins chose. On
   * failure nothing of the pod is left: the plugins undo their part, the namespace is removed.
   */
  async addPod(host: LabHost, subnetFile: string, opts: { portMappings?: PortMapping[] } = {}): Promise<LabPod> {
    const n = (this.podCount.get(host) ?? 0) + 1;
    this.podCount.set(host, n);
    const ns = await Netns.create(`${this.tag}-${host.name}-p${n}`);
    const attachment: Attachment = {
      containerId: ns.name,
      netns: ns.path,
      ifName: "eth0",
      capabilityArgs: opts.portMappings && { portMappings: opts.portMappings },
    };
    let result: CniResult;
    try {
      result = await this.cni(host, subnetFile).add(attachment);
    } catch (error) {
      await ns.destroy();
      throw error;
    }
    const ip = result.ips?.find((i) => !i.address.includes(":"));
    const ip6 = result.ips?.find((i) => i.address.includes(":"));
    if (!ip && !ip6)
      throw new WeftError("LAB_POD_NO_ADDRESS", `CNI ADD for ${ns.name} gave no address: ${JSON.stringify(result)}`);
    const name = `${host.name}-pod${n}`;
    const addr = ip && parseIpv4(ip.address.split("/")[0]);
    const pod: LabPod = {
      name,
      ns,
      host,
      get addr(): number {
        if (addr === undefined)
          throw new WeftError(
            "LAB_POD_NO_ADDRESS",
            `${name} has no IPv4 address (its node is IPv6-only): use its addr6`,
          );
        return addr;
      },
      ...(ip6 && { addr6: parseIpv6(ip6.address.split("/")[0]) }),
      attachment,
      result,
      subnetFile,
    };
    host.pods.push(pod);
    return pod;
  }

  /** CNI DEL of a pod (its interface and address released), then its namespace removed. */
  async removePod(pod: LabPod): Promise<void> {
    await this.cni(pod.host, pod.subnetFile).del(pod.attachment, pod.result);
    pod.host.pods.splice(pod.host.pods.indexOf(pod), 1);
    await pod.ns.destroy();
  }

  /**
   * The host's CNI runtime: flannel's cni-conf.json (kube-flannel.yml's, with ip-masq left to the
   * agent since lab traffic never leaves the pod network), its state under the lab's work dir.
   */
  cni(host: LabHost, subnetFile: string): CniRuntime {
    return new CniRuntime(
      labConfList(this.hostDir(host), subnetFile),
      [this.binDir, ...referencePluginDirs()],
      host.ns.wrap([]),
    );
  }

  /** Where a host's CNI state lives: subnet.env (without agent), flannel's dataDir, host-local's store. */
  hostDir(host: LabHost): string {
    return join(this.workDir, host.name);
  }

  private get binDir(): string {
    return join(this.workDir, "bin");
  }

  /** Removes every namespace of the cluster (pods, hosts, switch) and so every device in them. */
  async destroy(): Promise<void> {
    const all = [...this.hosts.flatMap((h) => h.pods.map((p) => p.ns)), ...this.hosts.map((h) => h.ns), this.switchNs];
    await Promise.all(all.map((ns) => ns.destroy()));
    removeTempDir(this.workDir);
  }

  describe(): string {
    return this.hosts
      .map(
        (h) =>
          `${h.name} ${formatIpv4(h.underlayAddr)} pods ${h.pods.map((p) => (p.addr6 !== undefined ? formatIpv6(p.addr6) : formatIpv4(p.addr))).join(", ")}`,
      )
      .join("\n");
  }
}
