// Talking to a running agent over the unix socket in its state dir (works from any network
// namespace, since the socket is a file).
import { request } from "node:http";
import { join } from "node:path";
import { SOCKET_NAME } from "../agent/http.js";
import { type ErrorCode, WeftError } from "../errors.js";

/** A read answers at once; a change (a reclaim) waits its turn on the lease queue and saves the ring. */
const TIMEOUT_MS = { read: 3000, change: 30_000 };

export function agentRequest(stateDir: string, method: string, path: string): Promise<unknown> {
  const socketPath = join(stateDir, SOCKET_NAME);
  const timeout = method === "GET" ? TIMEOUT_MS.read : TIMEOUT_MS.change;
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const req = request({ socketPath, method, path, timeout }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        // A refusal the agent gave a code (409, "[LEASE_RECLAIM_ALIVE] …") keeps it: scripts match on it.
        const refused = /^\[([A-Z][A-Z0-9_]*)\] ([\s\S]*)$/.exec(body.trim());
        if ((res.statusCode ?? 500) >= 400)
          reject(
            refused
              ? new WeftError(refused[1] as ErrorCode, refused[2])
              : new WeftError("CLI_AGENT_ERROR", `agent answered ${res.statusCode}: ${body.trim()}`),
          );
        else resolve(res.headers["content-type"]?.includes("json") ? JSON.parse(body) : body);
      });
    });
    req.on("timeout", () => {
      timedOut = true;
      req.destroy(new Error("timed out"));
    });
    req.on("error", (cause) =>
      reject(
        timedOut
          ? new WeftError(
              "CLI_AGENT_TIMEOUT",
              `the agent at ${socketPath} did not answer ${method} ${path} within ${timeout / 1000} s${method === "GET" ? "" : "; it may still have carried it out: check with weft status before asking again"}`,
              { cause },
            )
          : new WeftError(
              "CLI_AGENT_UNREACHABLE",
              (cause as NodeJS.ErrnoException).code === "EACCES"
                ? `cannot reach the agent at ${socketPath}: permission denied; run this as root (the agent's user): its socket is mode 0600 in a 0700 state dir`
                : `no agent answers at ${socketPath}: ${cause.message}; is it running with --state-dir ${stateDir}?`,
              { cause },
            ),
      ),
    );
    req.end();
  });
}
