// The agent's HTTP endpoints when a TCP port is taken by the time they listen (after the
// preflight's probe): the listen fails, and weft.sock, listening already, is closed and removed
// with it. Before, it stayed open and on disk, as the agent never got the servers to close.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, describe, expect, it } from "vitest";
import { AgentHttp, SOCKET_NAME } from "../../src/agent/http.js";
import { agentRequest } from "../../src/cli/agent-client.js";

const dir = mkdtempSync(join(tmpdir(), "weft-http-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("agent http", () => {
  it("closes and removes weft.sock when a TCP port it listens on after it is taken", async () => {
    // Any free port of the loopback, held by another server.
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    try {
      const handlers = {
        ready: () => false,
        waitingFor: () => "nothing",
        status: () => ({}),
        metrics: new Registry(),
        reclaim: async () => ({}),
      };
      await expect(
        AgentHttp.listen(handlers, join(dir, SOCKET_NAME), [{ host: "127.0.0.1", port, endpoints: ["/healthz"] }]),
      ).rejects.toMatchObject({ code: "EADDRINUSE" });
      expect(existsSync(join(dir, SOCKET_NAME))).toBe(false);
      await expect(agentRequest(dir, "GET", "/healthz")).rejects.toMatchObject({ code: "CLI_AGENT_UNREACHABLE" });
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });
});
