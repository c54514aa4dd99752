// The agent's HTTP endpoints: /healthz (200 while the process serves), /readyz (200 only once the
// lease is held, the backend is programmed and subnet.env is written), /status (JSON for `weft
// status` and the demo's live view) and /metrics (Prometheus). All of them on a unix socket in
// the state dir (mode 0600: root, or the agent's user), which local tools reach from any network
// namespace. On TCP only what each port is for: --healthz-port serves the health endpoints (and
// /status only with --healthz-status, as it shows members, underlay addresses and MACs),
// --metrics-port serves /metrics. The socket alone also takes POST /reclaim?node=NAME (`weft
// reclaim`): only whoever can open the state dir may hand a node's subnets back to the ring.
import { chmodSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Registry } from "prom-client";

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

function handler(h: HttpHandlers, endpoints: readonly Endpoint[]) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const reply = (code: number, type: string, body: string) => {
      res.writeHead(code, { "content-type": type });
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
            : reply(503, "text/plain", `not ready: ${h.waitingFor()}\n`);
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
      // A refusal with a code (e.g. LEASE_RECLAIM_ALIVE) is the caller's to fix: 409, code first.
      const code = (err as { code?: string }).code;
      reply(code ? 409 : 500, "text/plain", `${code ? `[${code}] ` : ""}${(err as Error).message}\n`);
    }
  };
}

export class AgentHttp {
  private readonly servers: Server[] = [];

  private constructor(private readonly socketPath: string) {}

  static async listen(h: HttpHandlers, socketPath: string, tcp: readonly TcpListener[]): Promise<AgentHttp> {
    const http = new AgentHttp(socketPath);
    rmSync(socketPath, { force: true }); // a stale socket of a previous run
    const listen = (s: Server, arg: string | { host: string; port: number }) =>
      new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        if (typeof arg === "string") s.listen(arg, resolve);
        else s.listen(arg.port, arg.host, resolve);
      });
    try {
      for (const where of [socketPath, ...tcp]) {
        const s = createServer(handler(h, typeof where === "string" ? SOCKET_ENDPOINTS : where.endpoints));
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
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    rmSync(this.socketPath, { force: true });
  }
}
