// The state dir (lease ring, VTEP MAC, weft.sock) belongs to one agent at a time: it is made 0700
// (created so when missing) and held two ways, so a second agent on the same dir stops before it
// touches weft.sock or the kernel. The holder binds an abstract unix socket named after the dir's
// inode, which the kernel frees when the holder dies, however it dies; it is seen by every agent
// in the same network namespace, as hostNetwork pods on one node are. For agents in other network
// namespaces a lock, a symlink `weft.lock` -> `<pid>@<boot id>@<netns>@<pidns>@<start time>`,
// made in one atomic step and without a data block (an agent killed while its disk is full can
// start again; older agents' `<pid>@<boot>` and lock files are still read), names the holder.
// Pids mean nothing across PID namespaces (a DaemonSet agent is pid 1 in its container), so a
// lock is stale, and taken over, when it is from an earlier boot, names this network namespace
// (whose socket the taker holds), or names this PID namespace and a process gone (pid and start
// time); a pid of another PID namespace is taken as held. Temp files of atomic writes cut short
// are removed.
import {
  chmod,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  unlink,
} from "node:fs/promises";
import type { Server } from "node:net";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { WeftError } from "../errors.js";
import { bindAbstract } from "../util/abstract-socket.js";
import { processAlive } from "../util/process-alive.js";

export const LOCK_FILE = "weft.lock";

/** Who a lock names: pid, boot, and (agents since the namespaces were recorded) the network and
 *  PID namespaces' inodes and the pid's start time; "" where not known. */
interface Holder {
  pid: string;
  boot: string;
  netns: string;
  pidns: string;
  start: string;
}

/** This boot's id ("" where /proc does not say): the same for every container on the host. */
async function bootId(): Promise<string> {
  return (await readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => "")).trim();
}

/** The inode of a process's namespace ("" where /proc does not say, or we may not look). */
async function namespaceOf(pid: number | "self", kind: "net" | "pid"): Promise<string> {
  const link = await readlink(`/proc/${pid}/ns/${kind}`).catch(() => "");
  return /\[(\d+)\]/.exec(link)?.[1] ?? "";
}

/** A process's start time (clock ticks since boot; "" if it is gone): with its pid, it names one process. */
async function startTime(pid: number | "self"): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  // Fields after the command name, which may hold spaces and parentheses: state is the 3rd field, starttime the 22nd.
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
}

async function thisHolder(): Promise<Holder> {
  const [boot, netns, pidns, start] = await Promise.all([
    bootId(),
    namespaceOf("self", "net"),
    namespaceOf("self", "pid"),
    startTime("self"),
  ]);
  return { pid: String(process.pid), boot, netns, pidns, start };
}

/** A lock's target: `<pid>@<boot id>@<netns>@<pidns>@<start>` (older agents read the first two). */
function lockTarget(h: Holder): string {
  return h.boot ? [h.pid, h.boot, h.netns, h.pidns, h.start].join("@") : h.pid;
}

/** The holder a lock names (all "" if none): a symlink's target, or an older agent's lock file's text (a pid). */
async function lockHolder(file: string): Promise<Holder> {
  const target = await readlink(file).catch((err: NodeJS.ErrnoException) =>
    err.code === "EINVAL" ? readFile(file, "utf8") : "",
  );
  const [pid, boot = "", netns = "", pidns = "", start = ""] = target.trim().split("@");
  return { pid, boot, netns, pidns, start };
}

/**
 * Whether the holder a lock names may still run, asked by one that holds the dir's abstract
 * socket, which no live agent in its own network namespace can then hold. A pid is looked at only
 * where it means something here: in this PID namespace, the one the lock names, or (an older
 * agent's lock, which names none) a live process that, being in this network namespace, cannot
 * be that holder (a DaemonSet agent's pid 1 is the host's init to a host agent).
 */
async function mayHold(named: Holder, self: Holder): Promise<boolean> {
  if (named.boot && self.boot && named.boot !== self.boot) return false; // the pid is from an earlier boot
  if (named.netns && named.netns === self.netns) return false;
  const pid = Number(named.pid);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  // Another PID namespace's pid cannot be looked up from here: held, as far as can be told.
  if (named.pidns && named.pidns !== self.pidns) return true;
  if (named.pidns && named.start) return (await startTime(pid)) === named.start;
  if (!processAlive(pid)) return false;
  return (await namespaceOf(pid, "net")) !== self.netns || !self.netns;
}

/** A system error in taking the lock, as the weft error saying what to do. */
function lockFailure(dir: string, cause: unknown): WeftError {
  return new WeftError(
    "AGENT_STATE_DIR_UNUSABLE",
    `--state-dir ${dir}: cannot take its lock ${LOCK_FILE} (${(cause as Error).message}); pass a directory weft may create and write`,
    { cause },
  );
}

export class StateDirLock {
  private constructor(
    private readonly file: string,
    /** What the lock names: only a lock naming it is this agent's to remove (pids repeat across containers). */
    private readonly target: string,
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
    let target: string;
    try {
      target = await StateDirLock.lockFile(dir, file);
    } catch (err) {
      held.close();
      throw err;
    }
    for (const name of await readdir(dir)) {
      if (name.startsWith(".") && name.endsWith(".tmp")) await rm(join(dir, name), { force: true });
    }
    return new StateDirLock(file, target, held);
  }

  /**
   * Takes the lock file (for agents in other network namespaces), taking over a stale one. The
   * stale lock is renamed aside, never removed by name: of two agents taking it over at once, one
   * moves it and the other finds it gone, or moves the winner's lock, sees that it is not the one
   * it judged, and links it back (a link, like the symlink, fails where a lock is in place).
   */
  private static async lockFile(dir: string, file: string): Promise<string> {
    const self = await thisHolder();
    const target = lockTarget(self);
    // Not a .tmp name, which the holder's start removes; unique, as agents in two containers may share a pid.
    const aside = join(dir, `.${LOCK_FILE}.${randomBytes(8).toString("hex")}.aside`);
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        // Atomic: fails if another holder's lock is there.
        await symlink(target, file);
        return target;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw lockFailure(dir, err);
      }
      const seen = await lstat(file).catch(() => undefined);
      if (!seen) continue; // gone meanwhile: try again
      const named = await lockHolder(file);
      if (await mayHold(named, self)) throw StateDirLock.locked(dir, file, named);
      try {
        await rename(file, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // another agent moved it
        throw lockFailure(dir, err);
      }
      const moved = await lstat(aside).catch((err) => {
        throw lockFailure(dir, err);
      });
      if (moved.ino !== seen.ino) {
        // Another agent's lock, taken over since it was judged: back in place, and judged anew.
        // EEXIST: a third agent's lock took the place meanwhile, and is judged next.
        await link(aside, file).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "EEXIST") throw lockFailure(dir, err);
        });
      }
      await rm(aside, { force: true });
    }
    throw StateDirLock.locked(dir, file, await lockHolder(file));
  }

  private static locked(dir: string, file: string, named: Holder): WeftError {
    return new WeftError(
      "AGENT_STATE_DIR_LOCKED",
      `--state-dir ${dir} is in use by another weft agent (pid ${named.pid || "unknown"}${named.netns ? ` in network namespace net:[${named.netns}]` : ""}, see ${file}); two agents on one state dir would take each other's weft.sock and devices: stop that one, or give this one its own --state-dir (if none runs there any more, remove ${file})`,
    );
  }

  async release(): Promise<void> {
    if ((await readlink(this.file).catch(() => undefined)) === this.target)
      await unlink(this.file).catch(() => undefined);
    await new Promise((r) => this.held.close(r));
  }
}
