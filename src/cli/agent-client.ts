// Talking to a running agent over the unix socket in its state dir (works from any network
// namespace, since the socket is a file).
import { request } from "node:http";
import { join } from "node:path";
import { SOCKET_NAME } from "../agent/http.js";
import { WeftError } from "../errors.js";

export function agentRequest(stateDir: string, method: string, path: string): Promise<unknown> {
  const socketPath = join(stateDir, SOCKET_NAME);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, timeout: 3000 }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        if ((res.statusCode ?? 500) >= 400)
          reject(new WeftError("CLI_AGENT_ERROR", `agent answered ${res.statusCode}: ${body.trim()}`));
        else resolve(res.headers["content-type"]?.includes("json") ? JSON.parse(body) : body);
      });
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (cause) =>
      reject(
        new WeftError(
          "CLI_AGENT_UNREACHABLE",
          `no agent answers at ${socketPath}: ${cause.message}; is it running with --state-dir ${stateDir}?`,
          { cause },
        ),
      ),
    );
    req.end();
  });
}
