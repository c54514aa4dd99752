// Replacing a file so that a crash leaves either the old contents or the new, never a mix:
// write a temp file beside it, fsync, rename over, fsync the directory.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * The temp file written beside `path` by a process (this one by default): a dot-file, as flannel
 * writes subnet.env's, on the same filesystem, so that the rename over `path` is atomic.
 */
export function atomicTempPath(path: string, pid = process.pid): string {
  return join(dirname(path), `.${basename(path)}.${pid}.tmp`);
}

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; dirMode?: number } = {},
): Promise<void> {
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
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }); // a full disk must not leave a half-written temp file
    throw err;
  }
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** The same, synchronously: for state read and written while a TUN device is opened in a namespace. */
export function writeFileAtomicSync(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; dirMode?: number } = {},
): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: opts.dirMode ?? 0o755 });
  const tmp = atomicTempPath(path);
  const fd = openSync(tmp, "w", opts.mode ?? 0o644);
  try {
    try {
      writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  const dirFd = openSync(dir, "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
