// The state dir lock and temp-file hygiene: a live holder is refused by pid, a dead one's lock is
// taken over (also an older agent's lock file, and on a full disk: a small tmpfs, as root),
// leftover temp files of cut-short atomic writes are removed, and a failed atomic write (here: a
// rename onto a directory, as a full disk fails a write) leaves none.
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LOCK_FILE, StateDirLock } from "../../src/agent/state-dir.js";
import { writeFileAtomic, writeFileAtomicSync } from "../../src/fs/atomic-write.js";
import { Tmpfs } from "../../src/lab/chaos/faults.js";
import { canUseNetns, Netns } from "../support/netns.js";

const base = mkdtempSync(join(tmpdir(), "weft-statedir-"));
const BOOT = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
afterAll(() => spawnSync("rm", ["-rf", base]));

describe("state dir", () => {
  it("is created 0700, locked by pid, refused while the holder lives, taken over once it is gone", async () => {
    const dir = join(base, "a", "state");
    const lock = await StateDirLock.acquire(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir)).toEqual([LOCK_FILE]);
    expect(readlinkSync(join(dir, LOCK_FILE))).toBe(`${process.pid}@${BOOT}`);
    // A second holder in the same process (as in the same network namespace) is refused too.
    await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({
      code: "AGENT_STATE_DIR_LOCKED",
      message: expect.stringContaining(`(pid ${process.pid} in its PID namespace`),
    });
    await lock.release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    // A live pid of this boot holds it; the same pid named by an earlier boot's lock (the host
    // lost power, and after the reboot the pid is another process's) does not.
    const other = spawn("sleep", ["30"]);
    try {
      symlinkSync(`${other.pid}@${BOOT}`, join(dir, LOCK_FILE));
      await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({ code: "AGENT_STATE_DIR_LOCKED" });
      rmSync(join(dir, LOCK_FILE));
      symlinkSync(`${other.pid}@00000000-0000-0000-0000-000000000000`, join(dir, LOCK_FILE));
      const taken = await StateDirLock.acquire(dir);
      expect(readlinkSync(join(dir, LOCK_FILE))).toBe(`${process.pid}@${BOOT}`);
      await taken.release();
    } finally {
      other.kill("SIGKILL");
      await new Promise((r) => other.once("exit", r));
    }

    const sleeper = spawn("sleep", ["30"]);
    try {
      writeFileSync(join(dir, LOCK_FILE), `${sleeper.pid}\n`);
      await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({
        code: "AGENT_STATE_DIR_LOCKED",
        message: expect.stringContaining(`--state-dir ${dir} is in use by another weft agent (pid ${sleeper.pid}`),
      });
    } finally {
      sleeper.kill("SIGKILL");
      await new Promise((r) => sleeper.once("exit", r));
    }
    // The holder is gone (killed, as by SIGKILL or a crash): its lock is stale.
    writeFileSync(join(dir, ".lease-state.json.12345.tmp"), "half a write");
    const again = await StateDirLock.acquire(dir);
    expect(readdirSync(dir)).toEqual([LOCK_FILE]);
    await again.release();
  });

  /** A 64 KiB tmpfs at `base/<name>` in a namespace of its own, both gone after `run`, also
   *  when the mount fails. */
  async function withTmpfs(name: string, run: (tmpfs: Tmpfs, ns: Netns) => Promise<void>): Promise<void> {
    const ns = await Netns.create(`sd${name}`);
    let tmpfs: Tmpfs | undefined;
    try {
      tmpfs = await Tmpfs.mount(ns, join(base, name), 64 * 1024);
      await run(tmpfs, ns);
    } finally {
      await tmpfs?.unmount();
      await ns.destroy();
    }
  }

  // An agent killed while its disk was full must start again there (its lock was once a file
  // with the pid written in, which failed with ENOSPC; the README promises a retry, not an exit).
  it.skipIf(!canUseNetns())("is taken over on a full disk", async () => {
    await withTmpfs("full", async (tmpfs) => {
      const dir = tmpfs.path;
      const gone = spawn("true");
      await new Promise((r) => gone.once("exit", r));
      symlinkSync(String(gone.pid), join(dir, LOCK_FILE)); // a killed holder's lock
      await tmpfs.fill("filler");
      expect(() => writeFileSync(join(dir, "probe"), "x")).toThrow(/ENOSPC/);
      const lock = await StateDirLock.acquire(dir);
      expect(readlinkSync(join(dir, LOCK_FILE))).toBe(`${process.pid}@${BOOT}`);
      await lock.release();
      expect(readdirSync(dir).sort()).toEqual(["filler", "probe"]);
    });
  });

  // The holder shares the suite's process group: a terminal's Ctrl-C reaches it too, while the
  // agents on the tmpfs still stop.
  it.skipIf(!canUseNetns())("stays mounted through a Ctrl-C, until unmounted", async () => {
    await withTmpfs("int", async (tmpfs, ns) => {
      const [holder] = await ns.pids();
      const ignored = BigInt(
        `0x${/^SigIgn:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${holder}/status`, "utf8"))![1]}`,
      );
      expect(ignored & (1n << 1n)).toBe(2n); // bit 2 - 1: SIGINT
      process.kill(holder, "SIGINT");
      // The signal is delivered before kill() returns; its effect (an exit) within a moment.
      await new Promise((r) => setTimeout(r, 200));
      writeFileSync(join(tmpfs.path, "after"), "x");
      expect(readdirSync(tmpfs.path)).toEqual(["after"]);
      await tmpfs.unmount();
      expect(await ns.pids()).toEqual([]);
    });
  });

  it("makes a dir that exists open to all (as a Kubernetes hostPath is created) 0700", async () => {
    const dir = join(base, "host-path");
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755); // whatever the umask
    const lock = await StateDirLock.acquire(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    await lock.release();
  });

  it("refuses a path that is a file, naming the flag", async () => {
    const file = join(base, "file");
    writeFileSync(file, "");
    await expect(StateDirLock.acquire(file)).rejects.toMatchObject({
      code: "AGENT_STATE_DIR_UNUSABLE",
      message: expect.stringContaining(`--state-dir ${file}: `),
    });
  });

  it("leaves no temp file when an atomic write fails", async () => {
    const dir = join(base, "w");
    const target = join(dir, "subnet.env");
    mkdirSync(join(target, "occupied"), { recursive: true }); // rename over a non-empty directory fails
    await expect(writeFileAtomic(target, "x")).rejects.toThrow();
    expect(() => writeFileAtomicSync(target, "x")).toThrow();
    expect(readdirSync(dir)).toEqual(["subnet.env"]);
  });
});
