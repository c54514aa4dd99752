// The agent's HTTP endpoints when a TCP port is taken by the time they listen (after the
// preflight's probe): the listen fails, and weft.sock, listening already, is closed and removed
// with it. Before, it stayed open and on disk, as the agent never got the servers to close.
// What a failure answers: 409 to a refusal, 503 to a node that cannot reclaim now (not joined,
// stopping; before, 500), 500 to the agent's own failures (a full disk),
// without a system error's errno as a weft code; and /readyz's reason only on the socket.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, describe, expect, it } from "vitest";
import { AgentHttp, SOCKET_NAME } from "../../src/agent/http.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { WeftError } from "../../src/errors.js";

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

  /** Status and body of a request on weft.sock or a TCP port. */
  const answer = (where: { socketPath: string } | { port: number }, method: string, path: string) =>
    new Promise<[number, string]>((resolve, reject) => {
      const req = request({ ...where, host: "127.0.0.1", method, path }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve([res.statusCode ?? 0, body]));
      });
      req.on("error", reject).end();
    });

  it("answers 409 to a refusal, 503 to a node that cannot reclaim now: a full disk and a system error are the agent's (500), the client keeps their message", async () => {
    const sub = mkdtempSync(join(dir, "fail-"));
    const failures: Record<string, Error> = {
      alive: new WeftError("LEASE_RECLAIM_ALIVE", "alive is alive or suspect in membership"),
      joining: new WeftError("LEASE_NOT_ADMITTED", "this node has not reached its cluster yet"),
      disk: new WeftError("LEASE_PERSIST_FAILED", "cannot save lease state: no space left on device"),
      errno: Object.assign(new Error("EACCES: permission denied, open '/var/lib/weft/ring.json'"), { code: "EACCES" }),
    };
    const http = await AgentHttp.listen(
      {
        ready: () => true,
        waitingFor: () => "",
        status: () => ({}),
        metrics: new Registry(),
        reclaim: async (node) => {
          throw failures[node];
        },
      },
      join(sub, SOCKET_NAME),
      [],
    );
    try {
      const socketPath = join(sub, SOCKET_NAME);
      expect(await answer({ socketPath }, "POST", "/reclaim?node=alive")).toEqual([
        409,
        "[LEASE_RECLAIM_ALIVE] alive is alive or suspect in membership\n",
      ]);
      expect(await answer({ socketPath }, "POST", "/reclaim?node=joining")).toEqual([
        503,
        "[LEASE_NOT_ADMITTED] this node has not reached its cluster yet\n",
      ]);
      expect(await answer({ socketPath }, "POST", "/reclaim?node=disk")).toEqual([
        500,
        "[LEASE_PERSIST_FAILED] cannot save lease state: no space left on device\n",
      ]);
      expect(await answer({ socketPath }, "POST", "/reclaim?node=errno")).toEqual([
        500,
        "EACCES: permission denied, open '/var/lib/weft/ring.json'\n",
      ]);
      // A weft code stays the error's code; an errno is no weft code, so the message carries it.
      for (const [node, code, message] of [
        ["disk", "LEASE_PERSIST_FAILED", "cannot save lease state: no space left on device"],
        ["errno", "CLI_AGENT_ERROR", "agent answered 500: EACCES: permission denied, open '/var/lib/weft/ring.json'"],
      ])
        await expect(agentRequest(sub, "POST", `/reclaim?node=${node}`), node).rejects.toMatchObject({ code, message });
    } finally {
      await http.close();
    }
  });

  it("says why it is not ready on weft.sock only: over TCP the reason would name nodes and errors", async () => {
    const sub = mkdtempSync(join(dir, "ready-"));
    // A free port of the loopback.
    const probe: Server = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const why = "waiting for a subnet lease: node-b (198.18.0.2) holds it";
    const http = await AgentHttp.listen(
      {
        ready: () => false,
        waitingFor: () => why,
        status: () => ({}),
        metrics: new Registry(),
        reclaim: async () => ({}),
      },
      join(sub, SOCKET_NAME),
      [{ host: "127.0.0.1", port, endpoints: ["/healthz", "/readyz"] }],
    );
    try {
      expect(await answer({ port }, "GET", "/readyz")).toEqual([
        503,
        "not ready (weft status on this node says why)\n",
      ]);
      expect(await answer({ socketPath: join(sub, SOCKET_NAME) }, "GET", "/readyz")).toEqual([
        503,
        `not ready: ${why}\n`,
      ]);
    } finally {
      await http.close();
    }
  });
});
