// Abstract unix socket names as locks: a name is bound by one process at a time and freed by the
// kernel when that process, and any child it handed the socket to, ends, however it ends (no stale
// lock file, no pid reused). They are
// seen within one network namespace (an agent's state dir, a CNI plugin's runs, which runtimes
// make in theirs).
import { createServer, type Server } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Binds the abstract socket `name` (leading NUL); undefined if another process holds it (only
 * EADDRINUSE says so: any other error is thrown, never taken for a holder). Unref'd, and a
 * connection to it is closed at once: it keeps no process alive.
 */
export function bindAbstract(name: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer((c) => c.destroy());
    server.once("error", (err: NodeJS.ErrnoException) =>
      err.code === "EADDRINUSE" ? resolve(undefined) : reject(err),
    );
    server.listen(name, () => resolve(server.unref()));
  });
}

/** bindAbstract, tried again every 100 ms while another process holds the name, for `ms` at most. */
export async function bindAbstractWithin(name: string, ms: number): Promise<Server | undefined> {
  const until = performance.now() + ms; // monotonic: a clock step neither ends nor stretches the wait
  for (;;) {
    const server = await bindAbstract(name);
    if (server || performance.now() >= until) return server;
    await sleep(100);
  }
}

/**
 * The descriptor of a name bound by bindAbstract, for a child to inherit (spawn's stdio), which
 * then keeps the name bound until it ends too, even if this process is killed first. Node.js has
 * no public way to it (a Server passed in stdio throws; nothing else makes such a socket), so it is
 * read from the server's handle (`_handle.fd`, libuv's, unchanged for a decade); undefined where
 * that fails, and the name is then this process's alone, as before.
 */
export function descriptorOf(server: Server): number | undefined {
  const fd = (server as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}
