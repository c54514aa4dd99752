// Replacing a file so that a crash leaves either the old contents or the new, never a mix:
// write a temp file beside it, fsync, rename over, fsync the directory. Once the rename is done
// the file holds the new contents (a process that dies next restarts with them), so a failing
// directory fsync after it does not report the write undone: it is tried once more and then
// returned, for the caller to log (only a power loss can still bring the old contents back).
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
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
  const tmp = atomicTempPath(path);
  const fh = await open(tmp, "w", opts.mode ?? 0o644);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await (opts.exclusive ? link(tmp, path) : rename(tmp, path));
  } catch (err) {
    await rm(tmp, { force: true }); // a full disk must not leave a half-written temp file
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
