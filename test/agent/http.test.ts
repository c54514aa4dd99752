// The agent's HTTP endpoints when a TCP port is taken by the time they listen (after the
// preflight's probe): the listen fails, and weft.sock, listening already, is closed and removed
// with it. Before, it stayed open and on disk, as the agent never got the servers to close.
// What a failure answers: 409 to a refusal, 503 to a node that cannot reclaim now (not joined,
// stopping; before, 500), 500 to the agent's own failures (a full disk),
// without a system error's errno as a weft code; and /readyz's reason only on the socket.
// A server error once listening is logged, the first at once and then how many more at most
// every 10 s (before, each: accept's ENFILE repeats with each connection tried; before that the
// listen's once("error") took the first unseen and the second, with no listener, ended the
// process); a TCP port holds at most TCP_MAX_CONNECTIONS connections, TCP_MAX_CONNECTIONS_PER_SOURCE
// from one address (before, one pod could take every slot of the health port and the kubelet's
// probes were closed unanswered), ends each connection with its answer (before, keep-alive held
// them), and closes a request not sent within its timeout (before, 60 s).
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, describe, expect, it, vi } from "vitest";
import {
  AgentHttp,
  SERVER_ERROR_LOG_EVERY_MS,
  SOCKET_NAME,
  TCP_MAX_CONNECTIONS,
  TCP_MAX_CONNECTIONS_PER_SOURCE,
} from "../../src/agent/http.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { WeftError } from "../../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "weft-http-"));
const quiet = pino({ level: "silent" });
/** Handlers of a ready agent with nothing to show. */
const handlers = {
  ready: () => true,
  waitingFor: () => "",
  status: () => ({}),
  metrics: new Registry(),
  reclaim: async () => ({}),
};
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("agent http", () => {
  it("closes and removes weft.sock when a TCP port it listens on after it is taken", async () => {
    // Any free port of the loopback, held by another server.
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    try {
      await expect(
        AgentHttp.listen(
          handlers,
          join(dir, SOCKET_NAME),
          [{ host: "127.0.0.1", port, endpoints: ["/healthz"] }],
          quiet,
        ),
      ).rejects.toMatchObject({ code: "EADDRINUSE" });
      expect(existsSync(join(dir, SOCKET_NAME))).toBe(false);
      await expect(agentRequest(dir, "GET", "/healthz")).rejects.toMatchObject({ code: "CLI_AGENT_UNREACHABLE" });
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  /** A free port of the loopback. */
  const freePort = async () => {
    const probe: Server = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    return port;
  };

  /** Status and body of a request on weft.sock or a TCP port (from `localAddress`, a loopback address). */
  const answer = (
    where: { socketPath: string } | { port: number; localAddress?: string },
    method: string,
    path: string,
  ) =>
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
      quiet,
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
    const port = await freePort();
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
      quiet,
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

  /** An AgentHttp with weft.sock in a dir of its own (`tag`) and /healthz on a free loopback port. */
  const healthPort = async (tag: string, log: pino.Logger = quiet) => {
    const sub = mkdtempSync(join(dir, `${tag}-`));
    const port = await freePort();
    const http = await AgentHttp.listen(
      handlers,
      join(sub, SOCKET_NAME),
      [{ host: "127.0.0.1", port, endpoints: ["/healthz"] }],
      log,
    );
    return { http, port, socketPath: join(sub, SOCKET_NAME) };
  };
  /** A connection to the port (from `from`, a loopback address) that sent a request line; `data` collects what the server answers. */
  const halfRequest = async (port: number, from = "127.0.0.1") => {
    const s: Socket = connect({ port, host: "127.0.0.1", localAddress: from });
    await new Promise<void>((resolve, reject) => s.once("connect", resolve).once("error", reject));
    let data = "";
    s.on("data", (d) => (data += d));
    const closed = new Promise<void>((r) => s.once("close", () => r()));
    s.on("error", () => {}); // a reset shows as the close
    s.write("GET /healthz HTTP/1.1\r\n");
    return { s, closed, data: () => data };
  };

  it("logs a server's first error once listening, then how many more at most every 10 s, counts each, and goes on serving", async () => {
    const logged: Array<Record<string, unknown>> = [];
    const log = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    const { http, port, socketPath } = await healthPort("err", log);
    try {
      // What net.Server emits when accept fails (its libuv callback's error); three times on each
      // server, then once more after the window.
      const servers = (http as unknown as { servers: import("node:http").Server[] }).servers;
      const accept = () => Object.assign(new Error("accept ENFILE"), { code: "ENFILE" });
      vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
      try {
        for (const s of servers) for (let i = 0; i < 3; i++) s.emit("error", accept());
        vi.advanceTimersByTime(SERVER_ERROR_LOG_EVERY_MS);
        // A window with no error closes with no line.
        vi.advanceTimersByTime(SERVER_ERROR_LOG_EVERY_MS);
        servers[1].emit("error", accept());
      } finally {
        vi.useRealTimers();
      }
      const tcp = `127.0.0.1:${port}`;
      expect(logged.map((r) => [r.code, r.address, (r.err as { code: string } | undefined)?.code, r.more])).toEqual([
        ["AGENT_HTTP_SERVER_ERROR", socketPath, "ENFILE", undefined],
        ["AGENT_HTTP_SERVER_ERROR", tcp, "ENFILE", undefined],
        ["AGENT_HTTP_SERVER_ERROR", socketPath, undefined, 2],
        ["AGENT_HTTP_SERVER_ERROR", tcp, undefined, 2],
        ["AGENT_HTTP_SERVER_ERROR", tcp, "ENFILE", undefined],
      ]);
      expect(http.refused).toEqual({ source: 0, limit: 0, error: 7 });
      expect(await answer({ port }, "GET", "/healthz")).toEqual([200, "weft is running\n"]);
    } finally {
      await http.close();
    }
  });

  type Held = Awaited<ReturnType<typeof halfRequest>>;
  /** Runs `body` on a health port; the connections it puts in `held` are cut, and the port closed, after. */
  const holding = async (tag: string, body: (http: AgentHttp, port: number, held: Held[]) => Promise<void>) => {
    const { http, port } = await healthPort(tag);
    const held: Held[] = [];
    try {
      await body(http, port, held);
    } finally {
      for (const h of held) h.s.destroy();
      await http.close();
    }
  };
  /** Cuts the `held` connections, then waits until the port answers /healthz from `from` again: the server counts a connection gone once its close reached it. */
  const answersOnceGone = async (held: Held[], port: number, from: string) => {
    for (const h of held) h.s.destroy();
    await Promise.all(held.map((h) => h.closed));
    let last: unknown;
    for (let i = 0; i < 50; i++) {
      last = await answer({ port, localAddress: from }, "GET", "/healthz").catch((err: Error) => err.message);
      if (Array.isArray(last) && last[0] === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(last).toEqual([200, "weft is running\n"]);
  };

  it("holds at most TCP_MAX_CONNECTIONS connections on a TCP port: more are closed unanswered, and it answers again once they go", () =>
    holding("cap", async (http, port, held) => {
      /** The i-th loopback address from 127.0.0.2 on. */
      const source = (i: number) => `127.0.${(i + 2) >> 8}.${(i + 2) & 255}`;
      // As many sources as it takes, each with as many connections as one source may hold.
      for (let i = 0; held.length < TCP_MAX_CONNECTIONS; i++)
        for (let j = 0; j < TCP_MAX_CONNECTIONS_PER_SOURCE; j++) held.push(await halfRequest(port, source(i)));
      // One more from an address of its own, its request whole: closed with no answer.
      const over = await halfRequest(port, "127.1.0.1");
      over.s.write("Host: weft\r\n\r\n");
      await over.closed;
      expect(over.data()).toBe("");
      expect(http.refused).toMatchObject({ source: 0, limit: 1 });
      await answersOnceGone(held, port, "127.1.0.1");
    }));

  it("holds at most TCP_MAX_CONNECTIONS_PER_SOURCE connections from one address: a client holding many keeps no other address's /healthz out", () =>
    holding("source", async (http, port, held) => {
      // One client (a pod, on a node's health port) with more connections than the port's cap
      // held, each with a request under way: before, it took every slot and the kubelet's probes,
      // from the node's address, were closed unanswered.
      for (let i = 0; i <= TCP_MAX_CONNECTIONS; i++) held.push(await halfRequest(port, "127.0.0.2"));
      expect(await answer({ port, localAddress: "127.0.0.3" }, "GET", "/healthz")).toEqual([200, "weft is running\n"]);
      // Those over its share closed unanswered, each counted.
      const over = held.slice(TCP_MAX_CONNECTIONS_PER_SOURCE);
      await Promise.all(over.map((h) => h.closed));
      expect(over.map((h) => h.data()).join("")).toBe("");
      expect(http.refused).toMatchObject({ source: over.length, limit: 0 });
      // Its first ones are served.
      const first = held[0];
      first.s.write("Host: weft\r\n\r\n");
      await first.closed;
      expect(first.data()).toMatch(/^HTTP\/1\.1 200 /);
      // Its share comes back as its connections go.
      await answersOnceGone(held, port, "127.0.0.2");
    }));

  it("closes each TCP connection with its answer, so that no keep-alive client holds a slot", async () => {
    const { http, port } = await healthPort("close");
    const c = await halfRequest(port);
    try {
      // An HTTP/1.1 request asks for keep-alive; before, the connection stayed open after the answer.
      c.s.write("Host: weft\r\n\r\n");
      const bound = new Promise<string>((r) => setTimeout(() => r("still open"), 3000).unref());
      expect(await Promise.race([c.closed.then(() => "closed"), bound])).toBe("closed");
      expect(c.data()).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\nconnection: close\r\n/i);
    } finally {
      c.s.destroy();
      await http.close();
    }
  });

  it("answers 408 to a TCP request not sent within its timeout and closes the connection", async () => {
    const { http, port } = await healthPort("slow");
    const c = await halfRequest(port);
    try {
      // A bound well past the timeout (5 s, checked every 5 s) and short of Node's default (60 s).
      const bound = new Promise<string>((r) => setTimeout(() => r("still open"), 30_000).unref());
      expect(await Promise.race([c.closed.then(() => "closed"), bound])).toBe("closed");
      expect(c.data()).toMatch(/^HTTP\/1\.1 408 /);
    } finally {
      c.s.destroy();
      await http.close();
    }
  }, 40_000);
});
