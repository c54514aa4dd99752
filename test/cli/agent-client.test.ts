// The CLI's requests to an agent's socket: an agent that does not answer in time is told apart
// from no agent at all (a reclaim may still have been carried out; asking again would mislead),
// and a caller the socket's mode keeps out (not root) is told to run as root, not to start an agent.
import { execFile } from "node:child_process";
import { chownSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { SOCKET_NAME } from "../../src/agent/http.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { projectFile } from "../../src/paths.js";
import { canRunAsRoot } from "../support/netns.js";

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

  it.skipIf(!canRunAsRoot())("tells a caller who may not open the socket to run as root", async () => {
    // The agent's own layout: a 0700 state dir (mkdtemp's mode) holding a listening socket.
    const server = createServer((_req, res) => res.end("{}"));
    await new Promise<void>((r) => server.listen(join(dir, SOCKET_NAME), r));
    try {
      // `weft status` refused as an operator who forgot sudo is: the state dir is another user's
      // (nobody's), and the caller is root without its capabilities (no CAP_DAC_OVERRIDE), not
      // nobody, who may not read a checkout under a 0700 dir (CI's mktemp -d) to run weft at all.
      chownSync(dir, 65534, 65534);
      const status = promisify(execFile)("setpriv", [
        "--bounding-set=-all",
        "--inh-caps=-all",
        process.execPath,
        projectFile("dist", "src", "cli", "main.js"),
        "status",
        "--state-dir",
        dir,
      ]);
      await expect(status).rejects.toMatchObject({
        code: 1,
        stderr: `weft: [CLI_AGENT_UNREACHABLE] cannot reach the agent at ${join(dir, SOCKET_NAME)}: permission denied; run this as root (the agent's user): its socket is mode 0600 in a 0700 state dir\n`,
      });
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
