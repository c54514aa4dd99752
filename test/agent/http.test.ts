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
// probes were closed unanswered), and at a cap closes the oldest connection with no request in
// for a newcomer (before, the newcomer: silent connections from the node's own address, shared by
// host processes and hostNetwork pods, locked the kubelet's probes out), ends each connection with its answer (before, keep-alive held
// them), and closes a request not sent within its timeout (before, 60 s).
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { Gauge, Registry } from "prom-client";
import { afterAll, describe, expect, it, vi } from "vitest";
import {
  AgentHttp,
  type HttpHandlers,
  SERVER_ERROR_LOG_EVERY_MS,
  SOCKET_NAME,
  TCP_MAX_CONNECTIONS,
  TCP_MAX_CONNECTIONS_PER_SOURCE,
} from "../../src/agent/http.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { WeftError } from "../../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "weft-http-"));
const quiet = pino({ level: "silent" });
/** Handlers whose /metrics answers only once `open` is called: requests in, their answers under way. */
const heldMetrics = () => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let asked = 0;
  const metrics = new Registry();
  new Gauge({
    name: "weft_test_held",
    help: "answered once the test lets it",
    registers: [metrics],
    async collect() {
      asked++;
      await gate;
    },
  });
  return { h: { ...handlers, metrics }, open, asked: () => asked };
};
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

  /** An AgentHttp with weft.sock in a dir of its own (`tag`) and /healthz and /metrics on a free loopback port. */
  const healthPort = async (tag: string, log: pino.Logger = quiet, h: HttpHandlers = handlers) => {
    const sub = mkdtempSync(join(dir, `${tag}-`));
    const port = await freePort();
    const http = await AgentHttp.listen(
      h,
      join(sub, SOCKET_NAME),
      [{ host: "127.0.0.1", port, endpoints: ["/healthz", "/metrics"] }],
      log,
    );
    return { http, port, socketPath: join(sub, SOCKET_NAME) };
  };
  /** A connection to the port (from `from`, a loopback address) that sent `sent` (a request line); `data` collects what the server answers. */
  const halfRequest = async (port: number, from = "127.0.0.1", sent = "GET /healthz HTTP/1.1\r\n") => {
    const s: Socket = connect({ port, host: "127.0.0.1", localAddress: from });
    await new Promise<void>((resolve, reject) => s.once("connect", resolve).once("error", reject));
    let data = "";
    s.on("data", (d) => (data += d));
    let isClosed = false;
    const closed = new Promise<void>((r) => s.once("close", () => r()));
    void closed.then(() => (isClosed = true));
    s.on("error", () => {}); // a reset shows as the close
    s.write(sent);
    return { s, closed, isClosed: () => isClosed, data: () => data };
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
      expect(http.refused).toEqual({ source: 0, limit: 0, evicted: 0, error: 7 });
      expect(await answer({ port }, "GET", "/healthz")).toEqual([200, "weft is running\n"]);
    } finally {
      await http.close();
    }
  });

  type Held = Awaited<ReturnType<typeof halfRequest>>;
  /** Runs `body` on a health port whose /metrics is held (heldMetrics); the connections it puts in `held` are cut, and the port closed, after. */
  const holding = async (
    tag: string,
    body: (http: AgentHttp, port: number, held: Held[], metrics: ReturnType<typeof heldMetrics>) => Promise<void>,
  ) => {
    const metrics = heldMetrics();
    const { http, port } = await healthPort(tag, quiet, metrics.h);
    const held: Held[] = [];
    try {
      await body(http, port, held, metrics);
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

  /** A request for /metrics, whole: with heldMetrics, under way until it opens. */
  const METRICS = "GET /metrics HTTP/1.1\r\nHost: weft\r\n\r\n";
  /** Waits (bounded) until the server has taken n requests for /metrics. */
  const asked = async (held: ReturnType<typeof heldMetrics>, n: number) => {
    for (let i = 0; i < 100 && held.asked() < n; i++) await new Promise((r) => setTimeout(r, 50));
    expect(held.asked()).toBe(n);
  };
  /** A new connection from `from` sending GET /healthz, which the port closes unanswered. */
  const unanswered = async (port: number, from: string) => {
    const over = await halfRequest(port, from);
    over.s.write("Host: weft\r\n\r\n");
    await over.closed;
    expect(over.data()).toBe("");
  };
  /** The i-th loopback address from 127.0.0.2 on. */
  const source = (i: number) => `127.0.${(i + 2) >> 8}.${(i + 2) & 255}`;
  /** Fills a port's TCP_MAX_CONNECTIONS from as many sources as it takes, each with as many as one may hold; `sent` by the i-th. */
  const fill = async (port: number, held: Held[], sent: (i: number) => string | undefined) => {
    for (let i = 0; held.length < TCP_MAX_CONNECTIONS; i++)
      for (let j = 0; j < TCP_MAX_CONNECTIONS_PER_SOURCE; j++)
        held.push(await halfRequest(port, source(i), sent(held.length)));
  };

  it("at TCP_MAX_CONNECTIONS closes the oldest connection with no request in for a new one, which it answers; of another source too", () =>
    holding("cap", async (http, port, held, metrics) => {
      // The first source's connections with their requests in, the rest silent.
      await fill(port, held, (i) => (i < TCP_MAX_CONNECTIONS_PER_SOURCE ? METRICS : undefined));
      await asked(metrics, TCP_MAX_CONNECTIONS_PER_SOURCE);
      expect(await answer({ port, localAddress: "127.1.0.1" }, "GET", "/healthz")).toEqual([200, "weft is running\n"]);
      const oldestSilent = held[TCP_MAX_CONNECTIONS_PER_SOURCE];
      await oldestSilent.closed;
      expect(oldestSilent.data()).toBe("");
      expect(held.flatMap((h, i) => (h.isClosed() ? [i] : []))).toEqual([TCP_MAX_CONNECTIONS_PER_SOURCE]);
      expect(http.refused).toMatchObject({ source: 0, limit: 0, evicted: 1 });
      // Those with requests in are answered.
      metrics.open();
      await Promise.all(held.slice(0, TCP_MAX_CONNECTIONS_PER_SOURCE).map((h) => h.closed));
      for (const h of held.slice(0, TCP_MAX_CONNECTIONS_PER_SOURCE)) expect(h.data()).toMatch(/^HTTP\/1\.1 200 /);
    }));

  it("at TCP_MAX_CONNECTIONS closes a new connection unanswered when each held one has its request in, and answers again once they go", () =>
    holding("full", async (http, port, held, metrics) => {
      await fill(port, held, () => METRICS);
      await asked(metrics, TCP_MAX_CONNECTIONS);
      await unanswered(port, "127.1.0.1");
      expect(http.refused).toMatchObject({ source: 0, limit: 1, evicted: 0 });
      expect(held.some((h) => h.isClosed())).toBe(false);
      metrics.open();
      await answersOnceGone(held, port, "127.1.0.1");
    }));

  it("at TCP_MAX_CONNECTIONS_PER_SOURCE from one address, a new one from it closes its oldest with no request in: silent connections from the node's address keep the kubelet's /healthz out no more", () =>
    holding("source", async (http, port, held, metrics) => {
      // The node's address (the kubelet probes it, host processes and hostNetwork pods share it):
      // its first connection with a request in, the rest silent. Before, the next was closed unanswered.
      held.push(await halfRequest(port, "127.0.0.2", METRICS));
      await asked(metrics, 1);
      while (held.length < TCP_MAX_CONNECTIONS_PER_SOURCE) held.push(await halfRequest(port, "127.0.0.2"));
      expect(await answer({ port, localAddress: "127.0.0.2" }, "GET", "/healthz")).toEqual([200, "weft is running\n"]);
      await held[1].closed;
      expect(held[1].data()).toBe("");
      expect(held.flatMap((h, i) => (h.isClosed() ? [i] : []))).toEqual([1]);
      expect(http.refused).toMatchObject({ source: 0, limit: 0, evicted: 1 });
      // Another address's connections are not its to close.
      const other = await halfRequest(port, "127.0.0.3");
      held.push(other);
      // Two more from the node's address: its two silent ones go.
      for (let i = 0; i < 2; i++)
        expect(await answer({ port, localAddress: "127.0.0.2" }, "GET", "/healthz")).toEqual([
          200,
          "weft is running\n",
        ]);
      expect(other.isClosed()).toBe(false);
      metrics.open();
      await held[0].closed;
      expect(held[0].data()).toMatch(/^HTTP\/1\.1 200 /);
    }));

  it("at TCP_MAX_CONNECTIONS_PER_SOURCE from one address closes a new one from it unanswered when each has its request in; another address is answered", () =>
    holding("busy", async (http, port, held, metrics) => {
      for (let i = 0; i < TCP_MAX_CONNECTIONS_PER_SOURCE; i++) held.push(await halfRequest(port, "127.0.0.2", METRICS));
      await asked(metrics, TCP_MAX_CONNECTIONS_PER_SOURCE);
      await unanswered(port, "127.0.0.2");
      expect(http.refused).toMatchObject({ source: 1, limit: 0, evicted: 0 });
      expect(await answer({ port, localAddress: "127.0.0.3" }, "GET", "/healthz")).toEqual([200, "weft is running\n"]);
      metrics.open();
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
