// A real agent's TCP health port (0.0.0.0, which pods reach too) against clients that misbehave:
// a connection holding a request under way no longer holds the agent's stop (before, the stop
// waited for it until the server's timeouts, past the lab's SIGKILL 10 s after SIGTERM, as past
// systemd's or the kubelet's: no "stopped" log, no exit code, weft.lock and weft.sock left).
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SOCKET_NAME } from "../../src/agent/http.js";
import { LOCK_FILE } from "../../src/agent/state-dir.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, logRecords, netConf } from "./support.js";

const HEALTHZ_PORT = 10254;

/**
 * A client in `a`'s host namespace on the health port that is always in the middle of a request:
 * it sends a request line, then every 500 ms the rest of it and the next request line (so neither
 * idle nor past a header timeout). Resolves once it sent the first; exits when the agent closes it
 * (or after 2 minutes, bounded).
 */
async function midRequestClient(ns: { wrap(argv: string[]): string[] }, addr: string): Promise<ChildProcess> {
  const script = `const s = require("node:net").connect(${HEALTHZ_PORT}, ${JSON.stringify(addr)}, () => {
    s.write("GET /healthz HTTP/1.1\\r\\n");
    console.log("held");
    setInterval(() => s.write("Host: weft\\r\\n\\r\\nGET /healthz HTTP/1.1\\r\\n"), 500);
  });
  s.resume();
  s.on("close", () => process.exit(0));
  setTimeout(() => process.exit(2), 120000);`;
  const [cmd, ...args] = ns.wrap([process.execPath, "-e", script]);
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    p.stdout!.on("data", (d: Buffer) => d.toString().includes("held") && resolve());
    p.once("exit", (code) => reject(new Error(`the client exited (${code}) before it held a request`)));
  });
  return p;
}

describe.skipIf(!canUseNetns())("agent: its TCP health port and misbehaving clients", () => {
  const env = agentLab({
    tag: "ahp",
    hosts: 1,
    conf: () => netConf("vxlan"),
    settled: { what: "ready", check: (s) => s.ready },
    flags: () => ["--healthz-port", String(HEALTHZ_PORT)],
  });

  it("stops with its stop log and exit code 0 while a client holds a request under way", async () => {
    const [a] = env.all;
    const client = await midRequestClient(a.host.ns, formatIpv4(a.host.underlayAddr));
    try {
      const since = await env.agents.logSize(a);
      // SIGTERM, then SIGKILL after 10 s (LabAgents.stop): before, the stop was still waiting then.
      await env.agents.stop(a);
      expect({ code: a.process!.exitCode, signal: a.process!.signalCode }).toEqual({ code: 0, signal: null });
      expect((await logRecords(a.dir, since)).map((r) => r.msg)).toContain("stopped");
      expect(existsSync(join(a.stateDir, SOCKET_NAME))).toBe(false);
      expect(existsSync(join(a.stateDir, LOCK_FILE))).toBe(false);
    } finally {
      client.kill();
    }
  });
});
