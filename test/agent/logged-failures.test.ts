// Failures the agent only logs, each with its code, brought about for real on a vxlan agent in a
// namespace: flannel.1 replaced by a device the kernel refuses to delete (the namespace's
// loopback, renamed) makes the periodic reconcile's repair fail (AGENT_RECONCILE_FAILED) and the
// agent's stop fail to remove its backend (AGENT_BACKEND_STOP_FAILED, then AGENT_STOP_INCOMPLETE
// and exit 1). A missing flannel.1 would not do: reads filter whole tables by device, and the
// next reconcile makes it again. Before those, a peer leaving while the agent cannot run iproute2
// makes the peer sync fail (AGENT_PEER_SYNC_FAILED), tried again until iproute2 runs again.
import { execFileSync } from "node:child_process";
import { readlinkSync, realpathSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { running, type LabAgent } from "../../src/lab/agents.js";
import { ping } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, eventually, netConf, podRoutes } from "./support.js";

/** The records of `a`'s log from byte `since` on with exactly `code`, once there are more than `after`. */
const logged = (a: LabAgent, since: number, code: string, after = 0) =>
  eventually(
    `${code} in ${a.host.name}'s log`,
    async () => (await coded(a.dir, since, code)).filter((r) => r.code === code),
    (r) => r.length > after,
    15_000,
  );

describe.skipIf(!canUseNetns())("agent: failures it logs, with their codes", () => {
  const env = agentLab({
    tag: "alf",
    hosts: 3,
    conf: () => netConf("vxlan"),
    settled: { what: "its peers", check: (s) => s.ready && s.peers.length === 2 },
    flags: () => ["--reconcile-interval", "1"],
  });

  /**
   * /dev/null bound over `ip` in the mount namespace `ip netns exec` gave `a`'s agent (a slave of
   * the host's: nothing propagates back, this process and the lab keep theirs), so that every
   * iproute2 command the agent runs fails; returns the undo (nothing to undo once the agent is
   * gone: its mount namespace went with it).
   */
  const breakIproute = (a: LabAgent): (() => void) => {
    const pid = String(a.process!.pid);
    // Never in this process's own mount namespace (a dead agent's reused pid could name another).
    const mnt = () => readlinkSync(`/proc/${pid}/ns/mnt`);
    const ours = mnt();
    expect(running(a.process) && ours !== readlinkSync("/proc/self/ns/mnt")).toBe(true);
    const ip = realpathSync(execFileSync("sh", ["-c", "command -v ip"], { encoding: "utf8" }).trim());
    execFileSync("nsenter", ["-t", pid, "-m", "mount", "--bind", "/dev/null", ip]);
    return () => {
      const now = (() => {
        try {
          return mnt();
        } catch {
          return undefined;
        }
      })();
      if (now === ours) execFileSync("nsenter", ["-t", pid, "-m", "umount", ip]);
    };
  };

  it("a peer leaves while the agent cannot run iproute2: AGENT_PEER_SYNC_FAILED, tried again, the node stays ready; once it runs, the routes follow", async () => {
    const [a1, a2, a3] = env.all;
    const subnet = (a: LabAgent) => env.settled.get(a.host.name)!.subnet!;
    /** The destinations of a1's routes into the pod network. */
    const routes = async () => (await podRoutes(a1.host)).map((r) => r.split(" ")[0]);
    expect(await routes()).toEqual([subnet(a2), subnet(a3)].sort());
    const from = await env.agents.logSize(a1);
    const repair = breakIproute(a1);
    try {
      await env.agents.stop(a3);
      const failed = await logged(a1, from, "AGENT_PEER_SYNC_FAILED");
      expect(failed[0]).toMatchObject({ level: 50, family: 4, err: { code: "KERNEL_TOOL_MISSING" } });
      // Tried again (the next change or the periodic reconcile) for as long as it fails.
      await logged(a1, from, "AGENT_PEER_SYNC_FAILED", failed.length);
      // A sync's failure leaves readiness alone: the peers that were set still carry traffic.
      expect(await agentRequest(a1.stateDir, "GET", "/readyz")).toBe("ready\n");
      expect(await routes()).toContain(subnet(a3));
    } finally {
      repair();
    }
    await eventually("a1's routes without a3's", routes, (r) => r.join() === subnet(a2), 15_000);
    expect((await ping(a1.host.pods[0], a2.host.pods[0].addr, { count: 2, timeoutS: 2 })).received).toBe(2);
    expect(await agentRequest(a1.stateDir, "GET", "/readyz")).toBe("ready\n");
  });

  let since = 0;

  it("a reconcile that cannot repair flannel.1 (a loopback device holds its name) logs AGENT_RECONCILE_FAILED", async () => {
    const [a1] = env.all;
    since = await env.agents.logSize(a1);
    // A reconcile can make flannel.1 again between the delete and the rename (seen under load):
    // delete and rename again until the rename wins, a bounded number of times.
    await a1.host.ns.exec([
      "sh",
      "-c",
      "ip link set lo down && for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do ip link del flannel.1 2>/dev/null; ip link set lo name flannel.1 2>/dev/null && exit 0; done; exit 1",
    ]);
    expect(await a1.host.ns.ip("link del flannel.1").catch((e: Error) => e.message)).toMatch(/not supported/);
    const [line] = await logged(a1, since, "AGENT_RECONCILE_FAILED");
    expect(line).toMatchObject({ level: 50, family: 4, err: { message: expect.stringContaining("flannel.1") } });
  });

  it("the agent's stop then cannot remove its backend: AGENT_BACKEND_STOP_FAILED, AGENT_STOP_INCOMPLETE, exit 1", async () => {
    const [a1] = env.all;
    await env.agents.stop(a1);
    expect(await env.agents.exited(a1)).toBe(1);
    const stop = (await coded(a1.dir, since, "AGENT_")).filter((r) => r.code !== "AGENT_RECONCILE_FAILED");
    expect(stop.map((r) => [r.code, r.family])).toEqual([
      ["AGENT_BACKEND_STOP_FAILED", 4],
      ["AGENT_STOP_INCOMPLETE", undefined],
    ]);
    expect(stop[0]).toMatchObject({ level: 50, err: { message: expect.stringContaining("flannel.1") } });
  });
});
