// The agent's HTTP endpoints: /healthz (200 while the process serves), /readyz (200 only once the
// lease is held, the backend is programmed and subnet.env is written), /status (JSON for `weft
// status` and the demo's live view) and /metrics (Prometheus). Served on TCP ports when asked
// (flanneld's --healthz-port, --metrics-port) and always on a unix socket in the state dir,
// which local tools reach from any network namespace. The socket alone also takes POST
// /reclaim?node=NAME (`weft reclaim`): only whoever can open the state dir may hand a node's
// subnets back to the ring.
import { rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Registry } from "prom-client";

export interface HttpHandlers {
  ready(): boolean;
  status(): unknown;
  metrics: Registry;
  /** An operator's decision that `node` is gone for good (see SubnetLeases.reclaim). */
  reclaim(node: string): Promise<unknown>;
}

export const SOCKET_NAME = "weft.sock";

function handler(h: HttpHandlers, admin: boolean) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const reply = (code: number, type: string, body: string) => {
      res.writeHead(code, { "content-type": type });
      res.end(body);
    };
    try {
      const url = new URL(req.url ?? "/", "http://weft");
      if (admin && url.pathname === "/reclaim") {
        const node = url.searchParams.get("node");
        if (req.method !== "POST" || !node) return reply(400, "text/plain", "POST /reclaim?node=NAME\n");
        return reply(200, "application/json", JSON.stringify(await h.reclaim(node)) + "\n");
      }
      switch (url.pathname) {
        case "/healthz":
          return reply(200, "text/plain", "weft is running\n");
        case "/readyz":
          return h.ready() ? reply(200, "text/plain", "ready\n") : reply(503, "text/plain", "not ready: waiting to reach a join target, for a lease or for the backend (weft status says which)\n");
        case "/status":
          return reply(200, "application/json", JSON.stringify(h.status(), (_k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n");
        case "/metrics":
          return reply(200, h.metrics.contentType, await h.metrics.metrics());
        default:
          return reply(404, "text/plain", "try /healthz, /readyz, /status or /metrics\n");
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

  static async listen(h: HttpHandlers, socketPath: string, tcp: Array<{ host: string; port: number }>): Promise<AgentHttp> {
    const http = new AgentHttp(socketPath);
    rmSync(socketPath, { force: true }); // a stale socket of a previous run
    const listen = (s: Server, arg: string | { host: string; port: number }) =>
      new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        if (typeof arg === "string") s.listen(arg, resolve);
        else s.listen(arg.port, arg.host, resolve);
      });
    for (const where of [socketPath, ...tcp]) {
      const s = createServer(handler(h, where === socketPath));
      http.servers.push(s);
      await listen(s, where);
    }
    return http;
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    rmSync(this.socketPath, { force: true });
  }
}
