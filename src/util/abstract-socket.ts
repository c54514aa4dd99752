// Abstract unix socket names as locks: a name is bound by one process at a time and freed by the
// kernel when that process dies, however it dies (no stale lock file, no pid reused). They are
// seen within one network namespace (an agent's state dir, a CNI plugin's runs, which runtimes
// make in theirs).
import { connect, createServer, type Server } from "node:net";

/** Binds the abstract socket `name` (leading NUL); undefined if another process holds it. Unref'd: it keeps no process alive. */
export function bindAbstract(name: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) =>
      err.code === "EADDRINUSE" ? resolve(undefined) : reject(err),
    );
    server.listen(name, () => resolve(server.unref()));
  });
}

/**
 * Whether a process holds the abstract socket `name`, asked by connecting, which never takes it
 * from the holder nor keeps it from a new one: only a refusal says no one does (a full backlog,
 * EAGAIN, is a holder's).
 */
export function abstractHeld(name: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(name, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code !== "ECONNREFUSED"));
  });
}
