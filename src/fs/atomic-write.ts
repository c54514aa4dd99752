// Replacing a file so that a crash leaves either the old contents or the new, never a mix:
// write a temp file beside it, fsync, rename over, fsync the directory. Once the rename is done
// the file holds the new contents (a process that dies next restarts with them), so a failing
// directory fsync after it does not report the write undone: it is tried once more and then
// returned, for the caller to log (only a power loss can still bring the old contents back).
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { link, mkdir, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * The temp file written beside `path` by a process (this one by default): a dot-file, as flannel
 * writes subnet.env's, on the same filesystem, so that the rename over `path` is atomic.
 */
export function atomicTempPath(path: string, pid = process.pid): string {
  return join(dirname(path), `.${basename(path)}.${pid}.tmp`);
}

export interface AtomicWriteOptions {
  mode?: number;
  dirMode?: number;
  /** Never replace: fail with EEXIST where `path` exists (linked in place of the rename). */
  exclusive?: boolean;
}

/** link(2)'s errors where the filesystem has no hard links (vfat, exFAT, some FUSE). */
const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"]);

/**
 * Resolves once `path` holds `data`: to undefined when the directory was synced too, else to the
 * directory fsync's error (the write stands; log it). Throws only when `path` was left as it was.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<Error | undefined> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: opts.dirMode ?? 0o755 });
  // An exclusive write (a secret key, maybe in a dir others may write) must not land in a file
  // another user made at a name known ahead: the temp name is random and made new, with its mode.
  const tmp = opts.exclusive
    ? join(dir, `.${basename(path)}.${process.pid}.${randomBytes(8).toString("hex")}.tmp`)
    : atomicTempPath(path);
  await writeSynced(tmp, opts.exclusive ? "wx" : "w", data, opts.mode);
  try {
    if (!opts.exclusive) await rename(tmp, path);
    // Where the filesystem has no hard links: made new (never over a file), removed where its
    // write fails (a crash midway can still leave it cut).
    else if (!(await link(tmp, path).then(() => true, noHardLinks))) await writeSynced(path, "wx", data, opts.mode);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  // The write is made: the temp name's removal failing must not report it otherwise.
  if (opts.exclusive) await rm(tmp, { force: true }).catch(() => undefined);
  let failed: Error | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const dh = await open(dir, "r");
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
      return undefined;
    } catch (err) {
      failed = err as Error; // EMFILE at open may be over by the second try
    }
  }
  return failed;
}

/** False where link(2) failed for want of hard links (the caller writes otherwise); else rethrows. */
function noHardLinks(err: NodeJS.ErrnoException): false {
  if (NO_HARD_LINKS.has(err.code ?? "")) return false;
  throw err;
}

/** Writes `file`, opened with `flag`, and syncs it; removes it where that fails (a full disk must
 *  not leave a half-written file). */
async function writeSynced(file: string, flag: "w" | "wx", data: string | Uint8Array, mode = 0o644): Promise<void> {
  const fh = await open(file, flag, mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}

/** The same, synchronously: for state read and written while a TUN device is opened in a namespace. */
export function writeFileAtomicSync(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; dirMode?: number } = {},
): Error | undefined {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: opts.dirMode ?? 0o755 });
  const tmp = atomicTempPath(path);
  const fd = openSync(tmp, "w", opts.mode ?? 0o644);
  try {
    try {
      const bytes = typeof data === "string" ? Buffer.from(data) : data;
      // writeSync may take part of it (a file size limit, a disk filling up): the rest goes next.
      for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  let failed: Error | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const dirFd = openSync(dir, "r");
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
      return undefined;
    } catch (err) {
      failed = err as Error;
    }
  }
  return failed;
}
