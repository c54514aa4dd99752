// The state dir (lease ring, VTEP MAC, weft.sock) belongs to one agent at a time: it is made 0700
// (created so when missing) and held two ways, so a second agent on the same dir stops before it touches
// weft.sock or the kernel. A lock names the holder's pid and boot (a lock whose pid is gone, or
// from an earlier boot, is stale: the holder was killed, or the host lost power, and it is taken
// over; after a reboot its pid may be any other process's); it is a symlink whose target is
// `<pid>@<boot id>`, made in one
// atomic step and without a data block, so an agent killed while its disk is full can start again
// (a pid written into a file failed with ENOSPC there; older agents' lock files are still read). Pids mean nothing across PID namespaces (two
// containers sharing the dir), so the holder also binds an abstract unix socket named after the
// dir's inode, which the kernel frees when the holder dies, however it dies; it is seen by every
// agent in the same network namespace, as hostNetwork pods on one node are. Temp files of atomic
// writes cut short are removed.
import { chmod, mkdir, readdir, readFile, readlink, rm, stat, symlink, unlink } from "node:fs/promises";
import type { Server } from "node:net";
import { join } from "node:path";
import { WeftError } from "../errors.js";
import { bindAbstract } from "../util/abstract-socket.js";
import { processAlive } from "../util/process-alive.js";

export const LOCK_FILE = "weft.lock";

/** This boot's id ("" where /proc does not say): the same for every container on the host. */
async function bootId(): Promise<string> {
  return (await readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => "")).trim();
}

/** The pid and boot a lock names ("" if none): a symlink's target, or an older agent's lock file's text (no boot). */
async function lockHolder(file: string): Promise<{ pid: string; boot: string }> {
  const target = await readlink(file).catch((err: NodeJS.ErrnoException) =>
    err.code === "EINVAL" ? readFile(file, "utf8") : "",
  );
  const [pid, boot = ""] = target.trim().split("@");
  return { pid, boot };
}

export class StateDirLock {
  private constructor(
    private readonly file: string,
    private readonly held: Server,
  ) {}

  /** Creates the dir if missing, makes it 0700, takes the lock, removes leftover temp files. */
  static async acquire(dir: string): Promise<StateDirLock> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (!(await stat(dir)).isDirectory()) throw new Error("not a directory");
      // One that exists may be open to all (a Kubernetes hostPath the kubelet created 0755).
      await chmod(dir, 0o700);
    } catch (cause) {
      throw new WeftError(
        "AGENT_STATE_DIR_UNUSABLE",
        `--state-dir ${dir}: cannot use it as the state dir (${(cause as Error).message}); pass a directory weft may create and write`,
        { cause },
      );
    }
    const file = join(dir, LOCK_FILE);
    const { dev, ino } = await stat(dir);
    const held = await bindAbstract(`\0weft-state-dir:${dev}:${ino}`);
    if (!held) {
      const holder = (await lockHolder(file).catch(() => undefined))?.pid;
      throw new WeftError(
        "AGENT_STATE_DIR_LOCKED",
        `--state-dir ${dir} is in use by another weft agent (pid ${holder || "unknown"} in its PID namespace, see ${file}); two agents on one state dir would take each other's weft.sock and devices: stop that one, or give this one its own --state-dir`,
      );
    }
    try {
      await StateDirLock.lockFile(dir, file);
    } catch (err) {
      held.close();
      throw err;
    }
    for (const name of await readdir(dir)) {
      if (name.startsWith(".") && name.endsWith(".tmp")) await rm(join(dir, name), { force: true });
    }
    return new StateDirLock(file, held);
  }

  /** Takes the pid lock (for agents in other network namespaces), taking over a stale one. */
  private static async lockFile(dir: string, file: string): Promise<void> {
    const boot = await bootId();
    for (let attempt = 0; ; attempt++) {
      try {
        // Atomic: fails if another holder's lock is there.
        await symlink(boot ? `${process.pid}@${boot}` : String(process.pid), file);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw err;
      }
      const named = await lockHolder(file).catch(() => ({ pid: "", boot: "" }));
      const holder = Number(named.pid);
      const thisBoot = !named.boot || !boot || named.boot === boot;
      if (thisBoot && Number.isInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) {
        throw new WeftError(
          "AGENT_STATE_DIR_LOCKED",
          `--state-dir ${dir} is in use by another weft agent (pid ${holder}, see ${file}); two agents on one state dir would take each other's weft.sock and devices: stop that one, or give this one its own --state-dir`,
        );
      }
      await rm(file, { force: true }); // stale: its holder is gone, or it is from an earlier boot
    }
  }

  async release(): Promise<void> {
    const holder = (await lockHolder(this.file).catch(() => undefined))?.pid;
    if (holder === String(process.pid)) await unlink(this.file).catch(() => undefined);
    await new Promise((r) => this.held.close(r));
  }
}
