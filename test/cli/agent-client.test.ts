// The CLI's requests to an agent's socket: an agent that does not answer in time is told apart
// from no agent at all (a reclaim may still have been carried out; asking again would mislead).
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SOCKET_NAME } from "../../src/agent/http.js";
import { agentRequest } from "../../src/cli/agent-client.js";

const dir = mkdtempSync(join(tmpdir(), "weft-client-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("agent client", () => {
  it("says an agent that does not answer timed out, and where none listens that none answers", async () => {
    await expect(agentRequest(dir, "GET", "/status")).rejects.toMatchObject({ code: "CLI_AGENT_UNREACHABLE" });
    // Holds every request unanswered, as an agent whose event loop is stuck.
    const server = createServer(() => undefined);
    await new Promise<void>((r) => server.listen(join(dir, SOCKET_NAME), r));
    try {
      await expect(agentRequest(dir, "GET", "/status")).rejects.toMatchObject({
        code: "CLI_AGENT_TIMEOUT",
        message: expect.stringMatching(/did not answer GET \/status within 3 s$/),
      });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it("keeps the code of a refusal the agent gave one, so that scripts can match on it", async () => {
    const server = createServer((req, res) => {
      if (req.url === "/reclaim/host3") res.writeHead(409).end("[LEASE_RECLAIM_ALIVE] host3 is alive or suspect\n");
      else res.writeHead(500).end("something broke\n");
    });
    await new Promise<void>((r) => server.listen(join(dir, SOCKET_NAME), r));
    try {
      await expect(agentRequest(dir, "POST", "/reclaim/host3")).rejects.toMatchObject({
        code: "LEASE_RECLAIM_ALIVE",
        message: "host3 is alive or suspect",
      });
      await expect(agentRequest(dir, "GET", "/status")).rejects.toMatchObject({
        code: "CLI_AGENT_ERROR",
        message: "agent answered 500: something broke",
      });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
