// The state dir (lease ring, VTEP MAC, weft.sock) belongs to one agent at a time: it is created
// 0700 when missing, and held with a lock file naming the holder's pid, so a second agent on the
// same dir stops before it touches weft.sock or the kernel. A lock whose pid is gone is stale
// (the holder was killed) and is taken over. Temp files of atomic writes cut short are removed.
import { link, mkdir, readdir, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { WeftError } from "../errors.js";

export const LOCK_FILE = "weft.lock";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class StateDirLock {
  private constructor(private readonly file: string) {}

  /** Creates the dir if missing (0700), takes the lock, removes leftover temp files. */
  static async acquire(dir: string): Promise<StateDirLock> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (!(await stat(dir)).isDirectory()) throw new Error("not a directory");
    } catch (cause) {
      throw new WeftError("AGENT_STATE_DIR_UNUSABLE", `--state-dir ${dir}: cannot use it as the state dir (${(cause as Error).message}); pass a directory weft may create and write`, { cause });
    }
    const file = join(dir, LOCK_FILE);
    const mine = join(dir, `.${LOCK_FILE}.${process.pid}.tmp`);
    await writeFile(mine, `${process.pid}\n`, { mode: 0o600 });
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await link(mine, file); // atomic: fails if another holder's file is there
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw err;
        }
        const holder = Number((await readFile(file, "utf8").catch(() => "")).trim());
        if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
          throw new WeftError(
            "AGENT_STATE_DIR_LOCKED",
            `--state-dir ${dir} is in use by another weft agent (pid ${holder}, see ${file}); two agents on one state dir would take each other's weft.sock and devices: stop that one, or give this one its own --state-dir`,
          );
        }
        await rm(file, { force: true }); // stale: its holder is gone
      }
    } finally {
      await rm(mine, { force: true });
    }
    for (const name of await readdir(dir)) {
      if (name.startsWith(".") && name.endsWith(".tmp")) await rm(join(dir, name), { force: true });
    }
    return new StateDirLock(file);
  }

  async release(): Promise<void> {
    const holder = (await readFile(this.file, "utf8").catch(() => "")).trim();
    if (holder === String(process.pid)) await unlink(this.file).catch(() => undefined);
  }
}
