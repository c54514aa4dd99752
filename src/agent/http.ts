// The agent's HTTP endpoints: /healthz (200 while the process serves), /readyz (200 only once the
// lease is held, the backend is programmed and subnet.env is written), /status (JSON for `weft
// status` and the demo's live view) and /metrics (Prometheus). Served on TCP ports when asked
// (flanneld's --healthz-port, --metrics-port) and always on a unix socket in the state dir,
// which local tools reach from any network namespace.
import { rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Registry } from "prom-client";

export interface HttpHandlers {
  ready(): boolean;
  status(): unknown;
  metrics: Registry;
}

export const SOCKET_NAME = "weft.sock";

function handler(h: HttpHandlers) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const reply = (code: number, type: string, body: string) => {
      res.writeHead(code, { "content-type": type });
      res.end(body);
    };
    try {
      switch (req.url?.split("?")[0]) {
        case "/healthz":
          return reply(200, "text/plain", "weft is running\n");
        case "/readyz":
          return h.ready() ? reply(200, "text/plain", "ready\n") : reply(503, "text/plain", "not ready: waiting for a lease or the backend\n");
        case "/status":
          return reply(200, "application/json", JSON.stringify(h.status(), (_k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n");
        case "/metrics":
          return reply(200, h.metrics.contentType, await h.metrics.metrics());
        default:
          return reply(404, "text/plain", "try /healthz, /readyz, /status or /metrics\n");
      }
    } catch (err) {
      reply(500, "text/plain", `${(err as Error).message}\n`);
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
      const s = createServer(handler(h));
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
