// weft bench decides after a failed run whether an agent's exit was the cause (BENCH_AGENT_GONE,
// which ends the run): every agent of the setup counts, its IPv6 lab's too, and one killed by a
// signal (a crash) as much as one that exited; the lab's waitReady stops at such an agent instead
// of polling it until its timeout. Real processes stand for the agents; the rest of the lab is not
// needed for the decision.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { BenchLab, checkAgents } from "../../src/bench/topology.js";
import { LabAgents } from "../../src/lab/agents.js";
import type { LabCluster } from "../../src/lab/cluster.js";

const started: ChildProcess[] = [];
afterEach(() => {
  for (const p of started.splice(0)) p.kill("SIGKILL");
});

/** A running process, or one that has already exited (as an agent that died) or was killed (crashed). */
async function agentProcess(exited: boolean | "SIGKILL"): Promise<ChildProcess> {
  const p = spawn(exited === true ? "true" : "sleep", exited === true ? [] : ["60"], { stdio: "ignore" });
  started.push(p);
  if (exited === "SIGKILL") p.kill("SIGKILL");
  if (exited) await once(p, "exit");
  return p;
}

/** A lab of two hosts whose agents are these processes. */
const labOf = (processes: ChildProcess[], family: 4 | 6) =>
  new BenchLab(
    { name: "vxlan", backend: "vxlan" },
    {},
    {} as LabCluster,
    { agents: processes.map((p, i) => ({ host: { name: `h${i + 1}` }, process: p })) } as unknown as LabAgents,
    family,
  );

describe("checkAgents", () => {
  it("passes while every agent of both labs runs", async () => {
    const lab = labOf([await agentProcess(false), await agentProcess(false)], 4);
    lab.ipv6 = labOf([await agentProcess(false), await agentProcess(false)], 6);
    expect(() => checkAgents(lab)).not.toThrow();
  });

  it("fails with BENCH_AGENT_GONE when an agent of the IPv6 lab has exited", async () => {
    const lab = labOf([await agentProcess(false), await agentProcess(false)], 4);
    lab.ipv6 = labOf([await agentProcess(false), await agentProcess(true)], 6);
    expect(() => checkAgents(lab)).toThrow(expect.objectContaining({ code: "BENCH_AGENT_GONE" }));
  });

  it("fails with BENCH_AGENT_GONE, naming the signal, when an agent was killed (exit code null)", async () => {
    const lab = labOf([await agentProcess(false), await agentProcess("SIGKILL")], 4);
    expect(lab.agents.agents[1].process?.exitCode).toBeNull();
    expect(() => checkAgents(lab)).toThrow(
      expect.objectContaining({ code: "BENCH_AGENT_GONE", message: expect.stringContaining("killed by SIGKILL") }),
    );
  });
});

describe("LabAgents.waitReady", () => {
  it("fails with LAB_AGENT_EXITED, naming the signal, for an agent killed by one, long before its timeout", async () => {
    const agents = await LabAgents.prepare({ hosts: [{ name: "h1" }] } as unknown as LabCluster, () => ({}));
    try {
      agents.agents[0].process = await agentProcess("SIGKILL");
      await expect(agents.waitReady(agents.agents[0], 60_000)).rejects.toMatchObject({
        code: "LAB_AGENT_EXITED",
        message: expect.stringContaining("h1's agent was killed by SIGKILL"),
      });
    } finally {
      await agents.stopAll();
    }
  });
});
