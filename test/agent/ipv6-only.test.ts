// Real agents in IPv6-only mode (EnableIPv4 false, EnableIPv6 with IPv6Network 2001:2:0:8000::/49)
// on a lab whose underlay is IPv6-only: the hosts' IPv4 addresses are flushed from eth0, so the
// agents can neither gossip nor tunnel over IPv4 even by mistake. Each node leases only an IPv6
// subnet, gossips over IPv6 (join targets in brackets), writes subnet.env as flanneld does in
// IPv6-only mode, and pods made through `weft cni` get only IPv6 addresses. Under vxlan
// (flannel-v6.1 alone) pods ping each other and a TCP transfer is exact; a killed node's IPv6
// route, neighbour and FDB entry are removed from its peers, and restarted with its state dir and
// a join list that names its peers by a DNS name with AAAA records only, it rejoins over IPv6 with
// the same subnet (the name is in /etc/netns/<its namespace>/hosts, which `ip netns exec` mounts
// over /etc/hosts for that namespace only; removed afterwards). A SIGHUP swap to host-gw keeps
// every subnet and carries the same traffic over routes via the peers' IPv6 underlay, and a
// killed node's IPv6 route is removed there too. All of it twice: with kernel vxlan, and with
// wasm-vxlan (weft-v6.1 alone, IPv6 sockets on the IPv6 underlay; a killed node leaves its IPv6
// route table).
import { access, mkdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { UNDERLAY6_FILE } from "../../src/agent/underlay.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import type { AgentStatus } from "../../src/lab/agents.js";
import { LAB_POD_NETWORK6 } from "../../src/lab/cluster.js";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv6, formatPrefix6, parsePrefix6 } from "../../src/net/ipv6.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, expectExactTcp } from "./support.js";

const NETWORK6 = formatPrefix6(LAB_POD_NETWORK6); // 2001:2:0:8000::/49
const v6Conf = (type: "vxlan" | "host-gw" | "wasm-vxlan") => ({
  EnableIPv4: false,
  EnableIPv6: true,
  IPv6Network: NETWORK6,
  Backend: { Type: type },
});
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

const MODES = [
  { type: "vxlan", tag: "a6o", device: "flannel-v6.1", v4device: /flannel\.1\b/ },
  { type: "wasm-vxlan", tag: "a6w", device: "weft-v6.1", v4device: /weft\.1\b/ },
] as const;

describe.skipIf(!canUseNetns()).each(MODES)("agents, IPv6-only, $type", (mode) => {
  const ready = (s: AgentStatus, backend: string, peers: number) =>
    s.ready &&
    s.backend?.type === backend &&
    s.peers.length === 0 &&
    s.peers6?.length === peers &&
    s.peers6.every((p) => p.backend === backend);
  /** Pings every pod pair over IPv6; a route follows a peer's record by up to a programming round. */
  const pingAll = async () => {
    for (const a of env.all) {
      for (const b of others(a)) {
        const [p, q] = [a.host.pods[0], b.host.pods[0]];
        expect((await pingWhenRouted(p, q.addr6!)).received, `${p.name} -> ${q.name}`).toBe(2);
      }
    }
  };

  const env = agentLab({
    tag: mode.tag,
    hosts: 3,
    ipv6: true,
    beforeStart: async (lab) => {
      for (const h of lab.hosts) await h.ns.ip("-4 addr flush dev eth0");
    },
    conf: () => v6Conf(mode.type),
    gossip6: true,
    settled: { what: "IPv6 peers", check: (st) => ready(st, mode.type, 2) },
  });
  const { others } = env;
  /** A node's IPv6 subnet as it leased it at the start. */
  const subnetOf = (name: string) => env.settled.get(name)!.subnet6!;

  /** /etc/netns/<namespace>/hosts files this test wrote (and whether it made /etc/netns). */
  const hostsFiles: string[] = [];
  let madeEtcNetns = false;

  afterAll(async () => {
    for (const dir of hostsFiles) await rm(dir, { recursive: true, force: true });
    if (madeEtcNetns) await rmdir("/etc/netns").catch(() => undefined); // only if nothing else is in it
  });

  it("the underlay has no IPv4 address; each node leases one distinct IPv6 /64 and no IPv4 subnet, and gossips over IPv6", async () => {
    for (const a of env.all) expect(await a.host.ns.ip("-4 addr show dev eth0")).toBe("");
    expect(new Set(env.all.map((a) => subnetOf(a.host.name))).size).toBe(3);
    for (const s of env.all.map((a) => subnetOf(a.host.name))) expect(s).toMatch(/^2001:2:0:[89a-f][0-9a-f]{3}::\/64$/);
    for (const a of env.all) {
      const s = await env.agents.status(a);
      expect(s.subnet).toBeUndefined();
      expect(s.underlay).toBeUndefined();
      expect(s.underlay6).toBe(formatIpv6(a.host.underlayAddr6!));
      expect(s.backend6).toEqual(s.backend);
      // Members are known at their IPv6 gossip addresses.
      expect(s.members.map((m) => m.addr).sort()).toEqual(env.all.map((x) => env.agents.gossipAddr(x)).sort());
      expect(s.peers6!.map((p) => p.underlay).sort()).toEqual(
        others(a)
          .map((x) => formatIpv6(x.host.underlayAddr6!))
          .sort(),
      );
      // Only the IPv6 ring is kept.
      expect(await exists(join(a.stateDir, "lease-state-ipv6.json"))).toBe(true);
      expect(await exists(join(a.stateDir, "lease-state.json"))).toBe(false);
      // The IPv6 underlay address gossip binds is saved, for the next start to keep.
      expect(await readFile(join(a.stateDir, UNDERLAY6_FILE), "utf8")).toBe(`${formatIpv6(a.host.underlayAddr6!)}\n`);
    }
  });

  it("writes subnet.env as flanneld does in IPv6-only mode, byte for byte (no IPv4 lines; MTU 1500 - 50, as flanneld writes for vxlan in every mode)", async () => {
    for (const a of env.all) {
      const first6 = `${formatIpv6(parsePrefix6(subnetOf(a.host.name)).addr + 1n)}/64`;
      expect(await readFile(env.agents.subnetFile(a), "utf8")).toBe(
        `FLANNEL_IPV6_NETWORK=${NETWORK6}\nFLANNEL_IPV6_SUBNET=${first6}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`,
      );
    }
  });

  it("/metrics shows the IPv6 lease and the kernel programming of the IPv6 instance", async () => {
    const text = (await agentRequest(env.all[0].stateDir, "GET", "/metrics")) as string;
    expect(text).toContain(`weft_lease{subnet="${subnetOf(env.all[0].host.name)}"} 1`);
    expect(Number(/weft_kernel_programming_total\{result="ok"\} (\d+)/.exec(text)?.[1])).toBeGreaterThan(0);
  });

  it(`${mode.type}: only ${mode.device}, with its entries per peer; pods have only IPv6 addresses and ping each other`, async () => {
    for (const a of env.all) {
      const links = await a.host.ns.ip("link show");
      expect(links).toContain(mode.device);
      expect(links).not.toMatch(mode.v4device);
      expect(() => a.host.pods[0].addr).toThrow(expect.objectContaining({ code: "LAB_POD_NO_ADDRESS" }));
      for (const b of others(a)) {
        const peer = subnetOf(b.host.name);
        if (mode.type === "vxlan")
          expect((await a.host.ns.ip(`-6 route show ${peer}`)).trim()).toBe(
            `${peer} via ${peer.split("/")[0]} dev flannel-v6.1 metric 1024 onlink pref medium`,
          );
      }
      if (mode.type === "wasm-vxlan") {
        // One kernel route for the whole network to the TUN device; the peers live in the dataplane's IPv6 table.
        const own = subnetOf(a.host.name).split("/")[0];
        expect(await a.host.ns.ip(`-6 -o addr show dev weft-v6.1`)).toContain(`inet6 ${own}/49 scope global`);
        expect((await a.host.ns.ip(`-6 route show ${NETWORK6}`)).trim()).toMatch(
          /^2001:2:0:8000::\/49 dev weft-v6\.1 proto kernel/,
        );
        const s = await env.agents.status(a);
        expect(Object.keys(s.dataplane!.peers).sort()).toEqual(
          others(a)
            .map((x) => x.host.name)
            .sort(),
        );
      }
    }
    await pingAll();
  });

  it(`${mode.type}: a TCP transfer over IPv6 arrives exactly (byte count and hash)`, async () => {
    await expectExactTcp([[env.all[0], env.all[1], 7101]], 6);
  });

  it(`${mode.type}: a killed node's IPv6 route (vxlan: and neighbour and FDB entry) is removed from its peers once it is declared dead`, async () => {
    const [a1, , a3] = env.all;
    const gone = subnetOf(a3.host.name);
    const under = formatIpv6(a3.host.underlayAddr6!);
    // vxlan: the kernel's route, neighbour and FDB entry; wasm-vxlan: the dataplane's IPv6 table.
    const left = async () =>
      mode.type === "wasm-vxlan"
        ? { route: Object.keys((await env.agents.status(a1)).dataplane!.peers).includes(a3.host.name) }
        : {
            route: (await a1.host.ns.ip(`-6 route show ${gone}`)).trim() !== "",
            neigh: (await a1.host.ns.ip("-6 neigh show dev flannel-v6.1")).includes(gone.split("/")[0]),
            fdb: (await a1.host.ns.exec(["bridge", "fdb", "show", "dev", "flannel-v6.1"])).includes(`dst ${under} `),
          };
    const every = (v: boolean) => (mode.type === "wasm-vxlan" ? { route: v } : { route: v, neigh: v, fdb: v });
    expect(await left()).toEqual(every(true));
    await env.agents.stop(a3, "SIGKILL");
    await env.agents.waitFor(a1, `${a3.host.name} gone from the IPv6 peers`, (st) => st.peers6?.length === 1, 60_000);
    for (let t = 0; t < 20 && Object.values(await left()).some(Boolean); t++)
      await new Promise((r) => setTimeout(r, 500));
    expect(await left()).toEqual(every(false));
    if (mode.type === "wasm-vxlan") {
      // Its pods are answered at once: ICMPv6 destination unreachable from this node's TUN device.
      const to = formatIpv6(a3.host.pods[0].addr6!);
      const out = await a1.host.pods[0].ns.exec(["sh", "-c", `ping -6 -c 1 -W 2 ${to}; true`]);
      expect(out).toMatch(/Destination unreachable: No route/);
    }
  });

  it("restarted with its state dir and --join naming its peers by AAAA records only, a node rejoins over IPv6 with the same subnet and its pods are reachable again", async () => {
    const [a1, a2, a3] = env.all;
    madeEtcNetns = !(await exists("/etc/netns"));
    const dir = join("/etc/netns", a3.host.ns.name);
    await mkdir(dir, { recursive: true });
    hostsFiles.push(dir);
    const name = "peers.weft.test";
    await writeFile(
      join(dir, "hosts"),
      `127.0.0.1 localhost
${formatIpv6(a1.host.underlayAddr6!)} ${name}
${formatIpv6(a2.host.underlayAddr6!)} ${name}
`,
    );
    env.agents.start(a3, ["--join", `${name}:7946`], []); // no address list from the lab: the name alone
    await env.agents.waitReady(a3);
    const s = await env.agents.waitFor(a3, "rejoined with both IPv6 peers", (st) => ready(st, mode.type, 2));
    expect(s.join.targets).toEqual([`${name}:7946`]);
    expect(s.subnet6).toBe(subnetOf(a3.host.name));
    await env.agents.waitFor(a1, `${a3.host.name} back among the IPv6 peers`, (st) => st.peers6?.length === 2);
    expect((await pingWhenRouted(a1.host.pods[0], a3.host.pods[0].addr6!)).received).toBe(2);
  });

  it(`SIGHUP swaps every node to host-gw: subnets kept, ${mode.device} gone, routes via the peers' IPv6 underlay, pods ping and TCP is exact`, async () => {
    for (const a of env.all) await writeFile(env.agents.netConfPath(a), JSON.stringify(v6Conf("host-gw")));
    for (const a of env.all) env.agents.reload(a);
    for (const a of env.all) {
      const s = await env.agents.waitFor(a, "host-gw over IPv6", (st) => ready(st, "host-gw", 2));
      expect(s.subnet6).toBe(subnetOf(a.host.name));
      expect(await a.host.ns.ip("link show")).not.toContain(mode.device);
    }
    const [a1, a2] = env.all;
    const peer = subnetOf(a2.host.name);
    expect((await a1.host.ns.ip(`-6 route show ${peer}`)).trim()).toBe(
      `${peer} via ${formatIpv6(a2.host.underlayAddr6!)} dev eth0 metric 1024 pref medium`,
    );
    expect(await readFile(env.agents.subnetFile(a1), "utf8")).toContain("FLANNEL_MTU=1500\n");
    await pingAll();
    await expectExactTcp([[a2, a1, 7102]], 6);
  });

  it("host-gw: a killed node's IPv6 route is removed from its peers once it is declared dead", async () => {
    const [a1, , a3] = env.all;
    const gone = subnetOf(a3.host.name);
    const route = () => a1.host.ns.ip(`-6 route show ${gone}`).then((r) => r.trim());
    expect(await route()).not.toBe("");
    await env.agents.stop(a3, "SIGKILL");
    await env.agents.waitFor(a1, `${a3.host.name} gone from the IPv6 peers`, (s) => s.peers6?.length === 1, 60_000);
    for (let t = 0; t < 20 && (await route()) !== ""; t++) await new Promise((r) => setTimeout(r, 500));
    expect(await route()).toBe("");
  });
});
