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
// time); a pid of another PID namespace is taken as held. Temp files of atomic writes cut short,
// and stale locks a taker cut short left moved aside, are removed.
import { chmod, link, lstat, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink } from "node:fs/promises";
import type { Server } from "node:net";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { WeftError } from "../errors.js";
import { bindAbstract } from "../util/abstract-socket.js";
import { processAlive } from "../util/process-alive.js";

export const LOCK_FILE = "weft.lock";
/** The ending of a lock's name while a taker has it moved aside. */
const ASIDE = ".aside";
const isAside = (name: string) => name.startsWith(`.${LOCK_FILE}.`) && name.endsWith(ASIDE);
/** Not a .tmp name, which the holder's start removes; unique, as agents in two containers may share a pid. */
const asideName = () => `.${LOCK_FILE}.${randomBytes(8).toString("hex")}${ASIDE}`;

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
  return holderOf(target);
}

function holderOf(target: string): Holder {
  const [pid, boot = "", netns = "", pidns = "", start = ""] = target.trim().split("@");
  return { pid, boot, netns, pidns, start };
}

/** A lock as judged: its holder, and what tells it from any other lock (its target or text, and
 *  its inode); undefined where there is none. */
async function lockIdentity(file: string): Promise<{ holder: Holder; target: string; id: string } | undefined> {
  const seen = await lstat(file).catch(() => undefined);
  if (!seen) return undefined;
  const target = await readlink(file).catch((err: NodeJS.ErrnoException) =>
    err.code === "EINVAL" ? readFile(file, "utf8").catch(() => undefined) : undefined,
  );
  if (target === undefined) return undefined;
  return { holder: holderOf(target), target, id: `${seen.ino}:${seen.isSymbolicLink()}:${target}` };
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
   * stale lock is renamed aside, never removed by name, and the moved one compared with the one
   * judged by its target (unique: pid and start time) and inode, not its inode alone, which ext4
   * gives at once to the next lock made. Of two takers one moves it and the other finds it gone,
   * or moves the winner's lock, sees that it is not the one judged, and links it back (where the
   * place was taken meanwhile it stays aside, still its holder's, and the one in the place gives
   * up). A moved lock is removed only where it is stale or linked back. A taker that gives up
   * leaves no lock of its own.
   */
  private static async lockFile(dir: string, file: string): Promise<string> {
    const self = await thisHolder();
    const target = lockTarget(self);
    const aside = join(dir, asideName());
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await StateDirLock.placed(dir, file, target, self)) return target;
      const judged = await lockIdentity(file);
      if (!judged) continue; // gone meanwhile: try again
      if (await mayHold(judged.holder, self)) return StateDirLock.withdraw(dir, file, target);
      try {
        await rename(file, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // another agent moved it
        throw lockFailure(dir, err);
      }
      const moved = await lockIdentity(aside);
      if (moved?.id === judged.id) {
        // The stale lock: ours goes in its place; it goes either way (whoever took the place is judged next).
        const won = await StateDirLock.placed(dir, file, target, self).catch(async (err) => {
          await rm(aside, { force: true });
          throw err;
        });
        await rm(aside, { force: true });
        if (won) return target;
        continue;
      }
      // Another agent's lock, taken over since it was judged: back in place, and judged anew.
      try {
        await link(aside, file);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // ENOENT: a third agent whose lock took the place put it back already.
        if (code === "ENOENT") continue;
        // EEXIST: a third agent's lock took the place, and is given up as it finds this one aside.
        if (code === "EEXIST") return StateDirLock.withdraw(dir, file, target);
        // Put back as a new lock of the same target (which fails where the place is taken), else left aside.
        if (moved)
          await symlink(moved.target, file).then(
            () => rm(aside, { force: true }),
            () => undefined,
          );
        throw lockFailure(dir, err);
      }
      await rm(aside, { force: true });
    }
    return StateDirLock.withdraw(dir, file, target);
  }

  /** Gives up on the lock, held by another (in `file`, or moved aside to `named.path`): none of this agent's is left behind. */
  private static async withdraw(
    dir: string,
    file: string,
    target: string,
    named?: { holder: Holder; path: string },
  ): Promise<never> {
    await StateDirLock.removeOwn(dir, file, target);
    throw StateDirLock.locked(dir, named?.path ?? file, named?.holder ?? (await lockHolder(file)));
  }

  /**
   * Removes this agent's lock, in its place or moved aside by a taker, for no later taker to find
   * (naming a live process of another PID namespace, it would lock all out for good). Looked for
   * until none is found: a taker may move it while the dir is read.
   */
  private static async removeOwn(dir: string, file: string, target: string): Promise<void> {
    for (let look = 0, found = true; found && look < 5; look++) {
      found = (await readlink(file).catch(() => undefined)) === target;
      if (found) await StateDirLock.vacate(dir, file, target);
      for (const name of await readdir(dir)) {
        const path = join(dir, name);
        if (!isAside(name) || (await lockIdentity(path))?.target !== target) continue;
        await rm(path, { force: true });
        found = true;
      }
    }
  }

  /** Takes this agent's lock from its place: renamed aside, as a taker would (never removed by
   *  name), and removed; another's moved instead is linked back, or left aside where the place
   *  was taken meanwhile (it stays its holder's). */
  private static async vacate(dir: string, file: string, target: string): Promise<void> {
    const mine = join(dir, asideName());
    if (
      !(await rename(file, mine).then(
        () => true,
        () => false,
      ))
    )
      return;
    const taken = await lockIdentity(mine);
    if (
      taken &&
      taken.target !== target &&
      !(await link(mine, file).then(
        () => true,
        () => false,
      ))
    )
      return;
    await rm(mine, { force: true });
  }

  /**
   * Makes this agent's lock; true once it is the holder. A live lock another taker moved aside
   * (the place then empty for a moment) is held still: one made then is given up (the mover links
   * the moved one back, or leaves it aside, where it stays its holder's). Moved locks that are
   * stale (a taker cut short) are removed.
   */
  private static async placed(dir: string, file: string, target: string, self: Holder): Promise<boolean> {
    try {
      await symlink(target, file); // atomic: fails if another holder's lock is there
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw lockFailure(dir, err);
      return false;
    }
    for (const name of await readdir(dir)) {
      if (!isAside(name)) continue;
      const path = join(dir, name);
      const moved = await lockIdentity(path);
      if (!moved || moved.target === target) continue;
      if (await mayHold(moved.holder, self))
        return StateDirLock.withdraw(dir, file, target, { holder: moved.holder, path });
      await rm(path, { force: true });
    }
    return true;
  }

  /** `file`: where the holder's lock is, in its place or moved aside. */
  private static locked(dir: string, file: string, named: Holder): WeftError {
    return new WeftError(
      "AGENT_STATE_DIR_LOCKED",
      `--state-dir ${dir} is in use by another weft agent (pid ${named.pid || "unknown"}${named.netns ? ` in network namespace net:[${named.netns}]` : ""}, see ${file}); two agents on one state dir would take each other's weft.sock and devices: stop that one, or give this one its own --state-dir (if none runs there any more, remove ${file})`,
    );
  }

  /** Removes this agent's lock as withdrawing does: moved aside, never by name (another's may
   *  have taken the place meanwhile), also where a taker left it moved aside. */
  async release(): Promise<void> {
    // Best effort: a stop must still finish.
    await StateDirLock.removeOwn(dirname(this.file), this.file, this.target).catch(() => undefined);
    await new Promise((r) => this.held.close(r));
  }
}
