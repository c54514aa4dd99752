// A real wasm-vxlan agent whose TUN device is deleted under it (`ip link del weft.1`): its
// dataplane's workers end (DATAPLANE_TUN_GONE), and the agent, as a kernel backend's reconcile
// makes a deleted device again, goes not ready and runs a new backend (device, queue pairs, peers)
// by itself, trying again with backoff while that fails; pods ping across once it runs, and a
// stop leaves nothing. Before, the agent stayed ready while pod traffic went nowhere.
import { describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import type { LabAgent } from "../../src/lab/agents.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, eventually, netConf, overlayDevices } from "./support.js";

/** The UDP sockets bound to the VXLAN port in the agent's namespace: one per queue pair. */
const vxlanSockets = async (a: LabAgent) =>
  (await a.host.ns.exec(["ss", "-Huan", "sport", "=", ":8472"])).split("\n").filter((l) => l.trim() !== "").length;

const metrics = (a: LabAgent) => agentRequest(a.stateDir, "GET", "/metrics") as Promise<string>;

describe.skipIf(!canUseNetns())("an agent whose TUN device is deleted", () => {
  const env = agentLab({
    tag: "atg",
    hosts: 2,
    conf: () => netConf("wasm-vxlan"),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
  });

  it("goes not ready, runs a new dataplane once it can, and pods ping across again", async () => {
    const [a1, a2] = env.all;
    expect((await pingWhenRouted(a1.host.pods[0], a2.host.pods[0].addr)).received).toBe(2);
    const pairs = await vxlanSockets(a1);
    expect(pairs).toBeGreaterThan(0);
    const since = await env.agents.logSize(a1);
    // A device of another kind takes the name at once, so that the first start of a new TUN
    // device fails (EINVAL) and the agent stays down, trying again, until it is gone.
    await a1.host.ns.exec(["sh", "-c", "printf 'link del weft.1\\nlink add weft.1 type bridge\\n' | ip -batch -"]);
    const codes = async () => (await env.agents.errorLines(a1, since)).map((l) => l.code);
    await eventually("the restart to fail", codes, (c) => c.includes("AGENT_BACKEND_RESTART_FAILED"), 20_000);
    expect(await codes()).toContain("AGENT_BACKEND_FAILED");
    const down = await env.agents.status(a1);
    expect(down.ready).toBe(false);
    expect((down as { waitingFor?: string }).waitingFor).toMatch(
      /^a new IPv4 wasm-vxlan backend: .*weft\.1 was deleted/,
    );
    await expect(agentRequest(a1.stateDir, "GET", "/readyz")).rejects.toThrow(/not ready/);
    expect(await metrics(a1)).toMatch(/^weft_ready 0$/m);

    await a1.host.ns.ip("link del weft.1");
    await env.agents.waitReady(a1, 30_000);
    expect((await pingWhenRouted(a1.host.pods[0], a2.host.pods[0].addr)).received).toBe(2);
    expect((await pingWhenRouted(a2.host.pods[0], a1.host.pods[0].addr)).received).toBe(2);
    const text = await metrics(a1);
    expect(text).toMatch(/^weft_ready 1$/m);
    expect(text).toMatch(/^weft_backend_restarts_total\{family="4"\} 1$/m);
    // The old dataplane's sockets were closed: the new one's alone are in the reuseport group.
    expect(await vxlanSockets(a1)).toBe(pairs);

    await env.agents.stop(a1);
    expect(a1.process?.exitCode).toBe(0);
    expect(await overlayDevices(a1.host)).toEqual([]);
    expect(await vxlanSockets(a1)).toBe(0);
  });
});
