// Failures the agent only logs, each with its code, brought about for real on a vxlan agent in a
// namespace: flannel.1 replaced by a device the kernel refuses to delete (the namespace's
// loopback, renamed) makes the periodic reconcile's repair fail (AGENT_RECONCILE_FAILED) and the
// agent's stop fail to remove its backend (AGENT_BACKEND_STOP_FAILED, then AGENT_STOP_INCOMPLETE
// and exit 1). A missing flannel.1 would not do: reads filter whole tables by device, and the
// next reconcile makes it again.
import { describe, expect, it } from "vitest";
import type { LabAgent } from "../../src/lab/agents.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, eventually, netConf } from "./support.js";

describe.skipIf(!canUseNetns())("agent: failures it logs, with their codes", () => {
  const env = agentLab({
    tag: "alf",
    hosts: 2,
    conf: () => netConf("vxlan"),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
    flags: () => ["--reconcile-interval", "1"],
  });
  /** The records of `a`'s log from byte `since` on with exactly `code`, once there is one. */
  const logged = (a: LabAgent, since: number, code: string) =>
    eventually(
      `${code} in ${a.host.name}'s log`,
      async () => (await coded(a.dir, since, code)).filter((r) => r.code === code),
      (r) => r.length > 0,
      15_000,
    );
  let since = 0;

  it("a reconcile that cannot repair flannel.1 (a loopback device holds its name) logs AGENT_RECONCILE_FAILED", async () => {
    const [a1] = env.all;
    since = await env.agents.logSize(a1);
    // At once, so that no reconcile makes flannel.1 again in between.
    await a1.host.ns.exec([
      "sh",
      "-c",
      "ip link del flannel.1 && ip link set lo down && ip link set lo name flannel.1",
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
