// The agent's HTTP endpoints: /healthz (200 while the process serves), /readyz (200 only once the
// lease is held, the backend is programmed and subnet.env is written), /status (JSON for `weft
// status` and the demo's live view) and /metrics (Prometheus). All of them on a unix socket in
// the state dir (mode 0600: root, or the agent's user), which local tools reach from any network
// namespace. On TCP only what each port is for: --healthz-port serves the health endpoints (and
// /status only with --healthz-status, as it shows members, underlay addresses and MACs),
// --metrics-port serves /metrics; /readyz's 503 says why only on the socket. The socket alone also takes POST /reclaim?node=NAME (`weft
// reclaim`): only whoever can open the state dir may hand a node's subnets back to the ring.
import { chmodSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { type ErrorCode, WeftError } from "../errors.js";
import { sourceGroup } from "../net/ipv6.js";

export interface HttpHandlers {
  ready(): boolean;
  /** Why the agent is not ready yet, for /readyz and `weft status`. */
  waitingFor(): string;
  status(): unknown;
  metrics: Registry;
  /** An operator's decision that `node` is gone for good (see SubnetLeases.reclaim). */
  reclaim(node: string): Promise<unknown>;
}

export const SOCKET_NAME = "weft.sock";
/** Only the agent's user (root) may connect: /status shows the cluster's members and addresses. */
export const SOCKET_MODE = 0o600;

export type Endpoint = "/healthz" | "/readyz" | "/status" | "/metrics" | "/reclaim";
export const ALL_ENDPOINTS: readonly Endpoint[] = ["/healthz", "/readyz", "/status", "/metrics"];
const SOCKET_ENDPOINTS: readonly Endpoint[] = [...ALL_ENDPOINTS, "/reclaim"];

export interface TcpListener {
  host: string;
  port: number;
  endpoints: readonly Endpoint[];
}

/** Failures the caller can act on: what it asked for is refused (409), or this node cannot do it
 *  now (503: not joined yet, stopping; ask another node or later). Any other failure, a full
 *  disk's LEASE_PERSIST_FAILED or a system error, is the agent's (500). */
const CALLERS: ReadonlyMap<ErrorCode, number> = new Map([
  ["LEASE_RECLAIM_ALIVE", 409],
  ["LEASE_RECLAIM_SELF", 409],
  ["LEASE_RECLAIM_UNKNOWN", 409],
  ["LEASE_NOT_ADMITTED", 503],
  ["LEASE_NOT_RUNNING", 503],
]);

/** /readyz's 503 over TCP: the reason can name nodes and errors, which only the socket's callers see. */
const NOT_READY_TCP = "not ready (weft status on this node says why)\n";

/** `local`: served on weft.sock, whose callers may see what the agent knows. */
function handler(h: HttpHandlers, endpoints: readonly Endpoint[], local: boolean) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const reply = (code: number, type: string, body: string) => {
      // Over TCP each connection ends with its answer: a client keeping connections alive would
      // hold the port's slots (the kubelet's probes open a connection each time anyway).
      res.writeHead(code, { "content-type": type, ...(!local && { connection: "close" }) });
      res.end(body);
    };
    const url = new URL(req.url ?? "/", "http://weft");
    const path = url.pathname as Endpoint;
    if (!endpoints.includes(path)) return reply(404, "text/plain", `try ${endpoints.join(", ")}\n`);
    try {
      switch (path) {
        case "/reclaim": {
          const node = url.searchParams.get("node");
          if (req.method !== "POST" || !node) return reply(400, "text/plain", "POST /reclaim?node=NAME\n");
          return reply(200, "application/json", JSON.stringify(await h.reclaim(node)) + "\n");
        }
        case "/healthz":
          return reply(200, "text/plain", "weft is running\n");
        case "/readyz":
          return h.ready()
            ? reply(200, "text/plain", "ready\n")
            : reply(503, "text/plain", local ? `not ready: ${h.waitingFor()}\n` : NOT_READY_TCP);
        case "/status":
          return reply(
            200,
            "application/json",
            JSON.stringify(h.status(), (_k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n",
          );
        case "/metrics":
          return reply(200, h.metrics.contentType, await h.metrics.metrics());
      }
    } catch (err) {
      // A weft error's code first, which the client keeps (scripts match on it); a system error's
      // (ENOSPC) is no weft code and stays out.
      const code = err instanceof WeftError ? err.code : undefined;
      reply((code && CALLERS.get(code)) ?? 500, "text/plain", `${code ? `[${code}] ` : ""}${(err as Error).message}\n`);
    }
  };
}

/** Connections a TCP port holds at once (a bound on the agent's file descriptors). */
export const TCP_MAX_CONNECTIONS = 256;
/** Connections a TCP port holds at once from one source (an IPv4 address, an IPv6 /64). */
export const TCP_MAX_CONNECTIONS_PER_SOURCE = 4;
/** Time a TCP client has to send its request (headers and body). */
const TCP_REQUEST_TIMEOUT_MS = 5000;
/** How often the TCP servers look for requests past their timeout: each look is a wakeup of an idle agent. */
const TCP_TIMEOUT_CHECK_MS = 5000;
/** How long the agent's stop lets requests under way finish before it cuts their connections. */
const CLOSE_GRACE_MS = 1000;
/** After a server error is logged, the next ones within this time are logged as one count at its end. */
export const SERVER_ERROR_LOG_EVERY_MS = 10_000;

/** Connections the agent's HTTP servers refused or failed to take, by reason (weft_http_connections_refused_total). */
export interface RefusedConnections {
  /** Over a TCP port's TCP_MAX_CONNECTIONS_PER_SOURCE from one source, each of its connections with a request in. */
  source: number;
  /** Over a TCP port's TCP_MAX_CONNECTIONS, each with a request in. */
  limit: number;
  /** Closed with no request in yet to make room at either cap for a newer connection. */
  evicted: number;
  /** Accept failed (AGENT_HTTP_SERVER_ERROR). */
  error: number;
}

export class AgentHttp {
  private readonly servers: Server[] = [];
  /** The servers' error log windows open now (serverErrors). */
  private readonly errorWindows = new Set<NodeJS.Timeout>();
  readonly refused: RefusedConnections = { source: 0, limit: 0, evicted: 0, error: 0 };

  private constructor(private readonly socketPath: string) {}

  /**
   * Logs a server's first error, then, while more come, how many at most every
   * SERVER_ERROR_LOG_EVERY_MS: accept's ENFILE repeats with each connection tried.
   */
  private serverErrors(address: string, log: Pick<Logger, "error">): (err: Error) => void {
    let held = 0;
    let window: NodeJS.Timeout | undefined;
    const message = "an HTTP server of the agent failed to take a connection (see err); it goes on serving";
    const close = () => {
      if (window) this.errorWindows.delete(window);
      window = undefined;
      if (held === 0) return;
      log.error(
        { code: "AGENT_HTTP_SERVER_ERROR", address, more: held },
        `${message}; ${held} more such errors in the last ${SERVER_ERROR_LOG_EVERY_MS / 1000} s`,
      );
      held = 0;
      open();
    };
    const open = () => {
      window = setTimeout(close, SERVER_ERROR_LOG_EVERY_MS).unref();
      this.errorWindows.add(window);
    };
    return (err) => {
      this.refused.error++;
      if (window) {
        held++;
        return;
      }
      log.error({ err, code: "AGENT_HTTP_SERVER_ERROR", address }, message);
      open();
    };
  }

  /**
   * Caps a TCP server's connections, in all and from one source. At a cap the oldest connection
   * (of that source, or of all) that has not sent its request yet is closed for the newcomer; only
   * when every one has, the newcomer is. Refusing newcomers instead let whoever holds silent
   * connections lock the kubelet's probes out: they come from the node's address, which every
   * host process and hostNetwork pod shares (and, behind ip-masq, other nodes' pods), and a
   * silent connection holds its slot for up to the request timeout plus a check interval.
   */
  private capConnections(s: Server): void {
    /** Connections with no request in yet, oldest first. */
    const waiting = new Set<Socket>();
    /** Every connection held, by source, oldest first. */
    const bySource = new Map<string, Set<Socket>>();
    const sourceOf = new Map<Socket, string>();
    /** c no longer takes a slot (it closed, or is being closed); idempotent. */
    const forget = (c: Socket) => {
      const from = sourceOf.get(c);
      if (from === undefined) return;
      sourceOf.delete(c);
      waiting.delete(c);
      const mine = bySource.get(from);
      mine?.delete(c);
      if (mine?.size === 0) bySource.delete(from);
    };
    /** Closes the oldest of `among` with no request in; false if none. */
    const evict = (among: Iterable<Socket>): boolean => {
      for (const c of among)
        if (waiting.has(c)) {
          this.refused.evicted++;
          forget(c);
          c.destroy();
          return true;
        }
      return false;
    };
    // Headers in is a request in: the TCP endpoints answer GETs, bodies unread.
    s.on("request", (req: IncomingMessage) => waiting.delete(req.socket));
    s.on("connection", (c: Socket) => {
      const from = sourceGroup(c.remoteAddress ?? "");
      const mine = bySource.get(from);
      if (mine && mine.size >= TCP_MAX_CONNECTIONS_PER_SOURCE && !evict(mine)) {
        this.refused.source++;
        c.destroy();
        return;
      }
      // A source at its cap made room from its own: the total is below its cap then.
      if (sourceOf.size >= TCP_MAX_CONNECTIONS && !evict(waiting)) {
        this.refused.limit++;
        c.destroy();
        return;
      }
      sourceOf.set(c, from);
      waiting.add(c);
      bySource.set(from, (bySource.get(from) ?? new Set()).add(c));
      c.once("close", () => forget(c));
    });
  }

  static async listen(
    h: HttpHandlers,
    socketPath: string,
    tcp: readonly TcpListener[],
    log: Pick<Logger, "error">,
  ): Promise<AgentHttp> {
    const http = new AgentHttp(socketPath);
    rmSync(socketPath, { force: true }); // a stale socket of a previous run
    const listen = (s: Server, arg: string | { host: string; port: number }) =>
      new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        const listening = () => {
          // A server error once listening (accept's ENFILE, ENOBUFS) is logged: with no listener
          // left, the next one would end the process.
          s.off("error", reject).on(
            "error",
            http.serverErrors(typeof arg === "string" ? arg : `${arg.host}:${arg.port}`, log),
          );
          resolve();
        };
        if (typeof arg === "string") s.listen(arg, listening);
        else s.listen(arg.port, arg.host, listening);
      });
    try {
      for (const where of [socketPath, ...tcp]) {
        const local = typeof where === "string";
        const s = createServer(
          // Over TCP, anyone who reaches the port (pods, on the health port) may connect: caps on
          // connections, in all and from one source (capConnections), and on the time to send a
          // request, so that clients holding connections can neither exhaust the agent's file
          // descriptors nor keep the kubelet's probes out.
          local
            ? {}
            : {
                headersTimeout: TCP_REQUEST_TIMEOUT_MS,
                requestTimeout: TCP_REQUEST_TIMEOUT_MS,
                connectionsCheckingInterval: TCP_TIMEOUT_CHECK_MS,
              },
          handler(h, local ? SOCKET_ENDPOINTS : where.endpoints, local),
        );
        if (!local) http.capConnections(s);
        http.servers.push(s);
        await listen(s, typeof where === "string" ? where : { host: where.host, port: where.port });
        if (typeof where === "string") chmodSync(where, SOCKET_MODE);
      }
    } catch (err) {
      // A port taken since the preflight's probe: the servers already listening (weft.sock) go
      // too, as the caller never gets them to close.
      await http.close();
      throw err;
    }
    return http;
  }

  async close(): Promise<void> {
    const closed = Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    // close() waits for every connection with a request under way: one that sent half a request
    // and stays silent (anyone reaching the health port, a pod too) would hold the agent's stop
    // until the server's timeouts, past a supervisor's kill. Answers under way get a moment first.
    const cut = setTimeout(() => {
      for (const s of this.servers) s.closeAllConnections();
    }, CLOSE_GRACE_MS);
    await closed;
    clearTimeout(cut);
    for (const t of this.errorWindows) clearTimeout(t);
    rmSync(this.socketPath, { force: true });
  }
}
