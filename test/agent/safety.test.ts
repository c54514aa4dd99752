// Lease safety with real agents, each a process in its own lab host's namespace: a partition of
// the underlay (nftables drop rules inside the hosts) for longer than failure detection, kill -9
// and a restart with the same state dir, a second node with a live node's name, and an operator's
// `weft reclaim`. After each, every live node must agree on who holds which subnet — in /status,
// in subnet.env and in the kernel routes — and no two live nodes may hold one subnet. Timings
// are never asserted; only states reached within generous bounds.
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents, type AgentStatus, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { projectFile } from "../../src/paths.js";
import { canUseNetns } from "../support/netns.js";
import { eventually, netConf, podRoutes } from "./support.js";

const run = promisify(execFile);
const weft = (...args: string[]) => run(process.execPath, [projectFile("dist", "src", "cli", "main.js"), ...args]);

/** What one live node says and has: its /status, subnet.env's subnet and its kernel routes. */
interface NodeView {
  name: string;
  status: AgentStatus;
  envSubnet: string;
  routes: string[];
}

async function views(agents: LabAgents, live: LabAgent[]): Promise<NodeView[]> {
  return Promise.all(
    live.map(async (a) => ({
      name: a.host.name,
      status: await agents.status(a),
      envSubnet: await agents.subnetEnv(a).then(
        (e) => `${formatIpv4(e.v4!.subnet.addr)}/${e.v4!.subnet.len}`,
        () => "none",
      ),
      routes: await podRoutes(a.host),
    })),
  );
}

/**
 * The invariants, as a list of what is wrong (empty: all hold): every live node is ready and sees
 * every other as a peer; no two hold one subnet (by /status or subnet.env); subnet.env says what
 * /status says; every node's peers and routes name each other node's own subnet, never its own.
 */
function problems(vs: NodeView[]): string[] {
  const out: string[] = [];
  const own = new Map(vs.map((v) => [v.name, v.status.subnet]));
  const holders = new Map<string, string>();
  for (const v of vs) {
    if (!v.status.ready) out.push(`${v.name} not ready`);
    if (!v.status.subnet) out.push(`${v.name} has no subnet`);
    if (v.envSubnet !== v.status.subnet)
      out.push(`${v.name}: subnet.env ${v.envSubnet} but /status ${v.status.subnet}`);
    for (const s of new Set([v.status.subnet, v.envSubnet])) {
      if (!s || s === "none") continue;
      const other = holders.get(s);
      if (other && other !== v.name) out.push(`${v.name} and ${other} both hold ${s}`);
      holders.set(s, v.name);
    }
    for (const o of vs) {
      if (o === v) continue;
      const peer = v.status.peers.find((p) => p.name === o.name);
      if (peer?.subnet !== own.get(o.name))
        out.push(`${v.name} sees ${o.name} at ${peer?.subnet ?? "nothing"}, it holds ${own.get(o.name)}`);
      if (!v.routes.some((r) => r.startsWith(`${own.get(o.name)} `)))
        out.push(`${v.name} has no route to ${o.name}'s ${own.get(o.name)}`);
    }
    for (const r of v.routes)
      if (r.startsWith(`${v.status.subnet} `)) out.push(`${v.name} routes its own subnet away: ${r}`);
    if (v.routes.length !== vs.length - 1)
      out.push(`${v.name} has ${v.routes.length} peer routes: ${v.routes.join("; ")}`);
  }
  return out;
}

/** Waits until the invariants hold on every live node; fails with what was still wrong. */
async function agree(agents: LabAgents, live: LabAgent[], what: string, timeoutMs = 120_000): Promise<NodeView[]> {
  let last: string[] = [];
  const vs = await eventually(
    what,
    async () => {
      const v = await views(agents, live).catch((e: Error) => e);
      last = v instanceof Error ? [v.message] : problems(v);
      return v;
    },
    () => last.length === 0,
    timeoutMs,
  ).catch((e: Error) => {
    throw new Error(`${e.message.split(";")[0]}; still wrong: ${last.join(" | ")}`);
  });
  return vs as NodeView[];
}

/** Drops all underlay traffic between a host and the given addresses (a table of the test's own). */
async function cut(a: LabAgent, from: LabAgent[]): Promise<void> {
  const addrs = from.map((b) => formatIpv4(b.host.underlayAddr)).join(", ");
  const file = join(a.dir, "partition.nft");
  await writeFile(
    file,
    `table inet weftlab {\n chain in { type filter hook input priority 0; ip saddr { ${addrs} } drop; }\n chain out { type filter hook output priority 0; ip daddr { ${addrs} } drop; }\n}\n`,
  );
  await a.host.ns.exec(["nft", "-f", file]);
}

async function uncut(a: LabAgent): Promise<void> {
  await a.host.ns.exec(["nft", "delete", "table", "inet", "weftlab"]);
}

const sees = (s: AgentStatus, name: string, state: string) =>
  s.members.some((m) => m.name === name && m.state === state);

describe.skipIf(!canUseNetns())(
  "agent: lease safety across partitions, crashes, duplicate names and reclaim (5 agents)",
  () => {
    let lab: LabCluster;
    let agents: LabAgents;
    let all: LabAgent[];
    let cluster: LabAgent[];
    let spare: LabAgent;
    const subnets = new Map<string, string>();

    beforeAll(async () => {
      lab = await LabCluster.create({ tag: "saf", hosts: 6 });
      // host1..host5 form the cluster; host6 is started later with flags of its own.
      agents = await LabAgents.prepare(lab, () => netConf("vxlan"), 5);
      all = agents.agents;
      cluster = all.slice(0, 5);
      spare = all[5];
    });

    afterAll(async () => {
      await agents?.stopAll();
      await lab?.destroy();
    });

    it("five agents started together agree; the 24 h reclaim grace is in force; a clean start logs nothing at error level", async () => {
      for (const a of cluster) agents.start(a);
      await Promise.all(cluster.map((a) => agents.waitReady(a, 120_000)));
      const vs = await agree(agents, cluster, "the five agents agreeing");
      for (const v of vs) {
        subnets.set(v.name, v.status.subnet!);
        expect(v.status.settings.lease.reclaimGraceMs).toBe(24 * 3600_000);
        expect(v.status.settings.reclaimGrace).toBe("24h");
        expect(v.status.join.state).toBe("joined");
        expect(v.status.reserved).toEqual([]);
      }
      for (const a of cluster) expect(await agents.errorLines(a), a.host.name).toEqual([]);
      // What an operator sees: `weft status` prints the grace in force.
      const printed = JSON.parse((await weft("status", "--state-dir", cluster[0].dir)).stdout);
      expect(printed.settings).toMatchObject({ reclaimGrace: "24h", lease: { reclaimGraceMs: 86_400_000 } });
    }, 180_000);

    it("partition {1,2} | {3,4,5} for longer than failure detection, then heal: nothing reclaimed, every view agrees again", async () => {
      const [left, right] = [cluster.slice(0, 2), cluster.slice(2)];
      for (const a of left) await cut(a, right);
      for (const a of right) await cut(a, left);
      try {
        // Each side declares the other dead ...
        for (const a of left)
          await agents.waitFor(
            a,
            "the other side dead",
            (s) => right.every((b) => sees(s, b.host.name, "dead")),
            90_000,
          );
        for (const a of right)
          await agents.waitFor(
            a,
            "the other side dead",
            (s) => left.every((b) => sees(s, b.host.name, "dead")),
            90_000,
          );
        // ... and keeps the other side's subnets reserved, with the day of grace.
        const s1 = await agents.status(cluster[0]);
        expect(s1.reserved.map((r) => r.node).sort()).toEqual(["host3", "host4", "host5"]);
        expect(
          s1.reserved.every((r) => r.reclaimAt !== null && Date.parse(r.reclaimAt) > Date.now() + 23 * 3600_000),
        ).toBe(true);
        await new Promise((r) => setTimeout(r, 10_000));
      } finally {
        for (const a of cluster) await uncut(a);
      }
      const vs = await agree(agents, cluster, "views agreeing after the heal", 180_000);
      for (const v of vs) expect(v.status.subnet).toBe(subnets.get(v.name));
      for (const a of cluster) {
        const log = await agents.logTail(a, 10_000);
        expect(log, a.host.name).not.toMatch(/LEASE_LOST|LEASE_RECLAIMED|LEASE_INCONSISTENT|AGENT_SUBNET_LOST/);
      }
    }, 360_000);

    it("kill -9, restarted 20 s later with its state dir: the same subnet, the cluster agrees, its routes come back", async () => {
      const victim = cluster[2];
      await agents.stop(victim, "SIGKILL");
      await new Promise((r) => setTimeout(r, 20_000));
      agents.start(victim);
      await agents.waitReady(victim, 120_000);
      const vs = await agree(agents, cluster, "views agreeing after the restart");
      expect(vs.find((v) => v.name === victim.host.name)?.status.subnet).toBe(subnets.get(victim.host.name));
      for (const v of vs) expect(v.status.subnet).toBe(subnets.get(v.name));
    }, 240_000);

    it("a second node named like a live one is refused: it exits with GOSSIP_NAME_CONFLICT, writes no subnet.env, and the first keeps its subnet", async () => {
      agents.start(spare, ["--node-name", "host2"]);
      expect(await agents.exited(spare, 60_000)).toBe(1);
      const log = await agents.logTail(spare, 200);
      expect(log).toMatch(/GOSSIP_NAME_CONFLICT/);
      expect(log).toContain("already used by a live node at 198.18.0.12:7946");
      await expect(agents.subnetEnv(spare)).rejects.toThrow(/ENOENT/);
      const vs = await agree(agents, cluster, "views agreeing after the refused duplicate");
      expect(vs.find((v) => v.name === "host2")?.status.subnet).toBe(subnets.get("host2"));
      for (const v of vs) expect(v.status.members.find((m) => m.name === "host2")).toMatchObject({ state: "alive" });
    }, 180_000);

    it("weft reclaim: refuses a live node; hands a dead one's subnets back; status shows what is reserved until then", async () => {
      const gone = cluster[4];
      const rest = cluster.slice(0, 4);
      await agents.stop(gone, "SIGKILL");
      for (const a of rest) await agents.waitFor(a, "host5 dead", (s) => sees(s, "host5", "dead"), 90_000);
      const before = await agents.status(rest[0]);
      expect(before.reserved).toEqual([
        expect.objectContaining({ node: "host5", subnet: subnets.get("host5"), condemned: false }),
      ]);
      await expect(weft("reclaim", "host3", "--state-dir", rest[0].dir)).rejects.toMatchObject({
        stderr: expect.stringMatching(/^weft: \[LEASE_RECLAIM_ALIVE\] .*host3 is alive or suspect/),
      });
      await expect(weft("reclaim", "nobody", "--state-dir", rest[0].dir)).rejects.toMatchObject({
        stderr: expect.stringMatching(/^weft: \[LEASE_RECLAIM_UNKNOWN\] /),
      });
      const { stdout } = await weft("reclaim", "host5", "--state-dir", rest[0].dir);
      expect(JSON.parse(stdout)).toMatchObject({ node: "host5" });
      for (const a of rest)
        await agents.waitFor(a, "nothing reserved for host5", (s) => s.reserved.length === 0, 60_000);
      await agree(agents, rest, "the four agreeing after the reclaim");
      for (const a of rest) {
        await eventually(
          `${a.host.name} without a route to host5's subnet`,
          () => podRoutes(a.host),
          (r) => !r.some((x) => x.startsWith(`${subnets.get("host5")} `)),
          30_000,
        );
        expect(await agents.logTail(a, 10_000)).not.toMatch(/LEASE_INCONSISTENT/);
      }
    }, 240_000);

    it("a node reclaimed while cut off (an operator's mistake) gives its subnet up at the heal: backend stopped, subnet.env rewritten, reprogrammed, said loudly; views agree", async () => {
      const victim = cluster[3];
      const rest = cluster.slice(0, 3);
      const old = subnets.get(victim.host.name)!;
      for (const a of rest) await cut(a, [victim]);
      await cut(victim, rest);
      try {
        for (const a of rest) await agents.waitFor(a, "host4 dead", (s) => sees(s, "host4", "dead"), 90_000);
        await weft("reclaim", "host4", "--state-dir", rest[0].dir);
        for (const a of rest)
          await agents.waitFor(a, "nothing reserved for host4", (s) => s.reserved.length === 0, 60_000);
      } finally {
        for (const a of [...rest, victim]) await uncut(a);
      }
      await eventually(
        "host4 serving a new subnet",
        () => agents.logTail(victim, 10_000),
        (t) => t.includes("AGENT_SUBNET_REPLACED"),
        120_000,
      );
      const vs = await agree(agents, cluster.slice(0, 4), "views agreeing after host4 lost its subnet");
      const v4 = vs.find((v) => v.name === "host4")!;
      expect(v4.status.subnet).not.toBe(old);
      expect(v4.envSubnet).toBe(v4.status.subnet);
      // In order: lost, backend stopped, subnet.env removed, then the new subnet programmed.
      const log = await agents.logTail(victim, 10_000);
      const at = (what: string) => log.indexOf(what);
      expect(at("LEASE_LOST")).toBeGreaterThan(0);
      expect(at("AGENT_SUBNET_LOST")).toBeGreaterThan(at("LEASE_LOST"));
      expect(at("AGENT_SUBNET_REPLACED")).toBeGreaterThan(at("AGENT_SUBNET_LOST"));
      subnets.set("host4", v4.status.subnet!);
    }, 300_000);

    it("a graceful restart (SIGTERM, back 6 s later with its state dir) keeps the subnet; the cluster agrees", async () => {
      const node = cluster[0];
      await agents.stop(node, "SIGTERM");
      await new Promise((r) => setTimeout(r, 6000));
      agents.start(node);
      await agents.waitReady(node, 120_000);
      const vs = await agree(agents, cluster.slice(0, 4), "views agreeing after the graceful restart");
      for (const v of vs) expect(v.status.subnet).toBe(subnets.get(v.name));
    }, 240_000);

    it("a node reclaimed while it was down comes back with a new subnet and never programs the old one", async () => {
      const back = cluster[4];
      const old = subnets.get("host5")!;
      const from = await agents.logSize(back);
      agents.start(back);
      await agents.waitReady(back, 120_000);
      const vs = await agree(agents, cluster, "views agreeing with host5 back");
      expect(vs.find((v) => v.name === "host5")?.status.subnet).not.toBe(old);
      const log = (await readFile(join(back.dir, "agent.log"))).subarray(from).toString("utf8");
      expect(log).toContain("LEASE_LOST");
      expect(log).not.toContain("AGENT_SUBNET_LOST"); // found out before anything was programmed
    }, 240_000);

    it("a clean stop (SIGTERM) of every agent logs nothing at error level and exits 0", async () => {
      const live = cluster;
      const from = await Promise.all(live.map((a) => agents.logSize(a)));
      for (const a of live) await agents.stop(a, "SIGTERM");
      for (const [i, a] of live.entries()) {
        expect(a.process?.exitCode, a.host.name).toBe(0);
        expect(await agents.errorLines(a, from[i]), a.host.name).toEqual([]);
      }
    }, 120_000);
  },
);
