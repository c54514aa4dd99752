// The state dir lock and temp-file hygiene: a live holder is refused by pid, a dead one's lock is
// taken over (also an older agent's lock file, and on a full disk: a small tmpfs, as root), by
// one of several takers at once, leftover temp files of cut-short atomic writes and stale locks
// moved aside are removed, and a failed atomic write (here: a
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
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
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
    expect(readlinkSync(join(dir, LOCK_FILE))).toMatch(new RegExp(`^${process.pid}@${BOOT}@\\d+@\\d+@\\d+$`));
    // A second holder in the same process (as in the same network namespace) is refused too.
    await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({
      code: "AGENT_STATE_DIR_LOCKED",
      message: expect.stringContaining(`(pid ${process.pid} in its PID namespace`),
    });
    await lock.release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    // A live process of this boot in this network namespace is no holder (the socket says so):
    // a lock naming this namespace (pid 1: a DaemonSet agent's, SIGKILLed, whose pid is the
    // host's init to a host agent), or an older agent's naming a pid now another process's here,
    // is taken over.
    const ours = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/net"))![1];
    const reused = spawn("sleep", ["30"]);
    try {
      for (const stale of [`1@${BOOT}@${ours}@4026531836@1`, `${reused.pid}@${BOOT}`, `${reused.pid}\n`]) {
        if (stale.endsWith("\n")) writeFileSync(join(dir, LOCK_FILE), stale);
        else symlinkSync(stale, join(dir, LOCK_FILE));
        const taken = await StateDirLock.acquire(dir);
        expect(readlinkSync(join(dir, LOCK_FILE))).toMatch(new RegExp(`^${process.pid}@${BOOT}@${ours}@\\d+@\\d+$`));
        await taken.release();
        expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
      }
    } finally {
      reused.kill("SIGKILL");
      await new Promise((r) => reused.once("exit", r));
    }
    // The holder is gone (killed, as by SIGKILL or a crash): its lock is stale; so is one that a
    // taker cut short left moved aside.
    writeFileSync(join(dir, ".lease-state.json.12345.tmp"), "half a write");
    symlinkSync("1@an-earlier-boot@1@1@1", join(dir, `.${LOCK_FILE}.0123456789abcdef.aside`));
    const again = await StateDirLock.acquire(dir);
    expect(readdirSync(dir)).toEqual([LOCK_FILE]);
    await again.release();
  });

  // A live holder in another network namespace (whose socket this one cannot see) is refused by
  // the lock, and so is a live process that an older agent's lock names there; once the holder is
  // gone its lock is stale (its start time names it, not its pid alone).
  it.skipIf(!canUseNetns())("is refused while an agent in another network namespace holds it", async () => {
    const dir = join(base, "netns", "state");
    const ns = await Netns.create("sdlock");
    const code = `import("${pathToFileURL(join(process.cwd(), "dist/src/agent/state-dir.js"))}").then(async (m) => { await m.StateDirLock.acquire(${JSON.stringify(dir)}); process.stdout.write("held\\n"); setInterval(() => {}, 1000); })`;
    const holder = spawn("ip", ["netns", "exec", ns.name, process.execPath, "-e", code], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise((r) => holder.stdout.once("data", r));
      const named = readlinkSync(join(dir, LOCK_FILE));
      await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({
        code: "AGENT_STATE_DIR_LOCKED",
        message: expect.stringContaining(`in network namespace net:[`),
      });
      expect(readlinkSync(join(dir, LOCK_FILE))).toBe(named);
      rmSync(join(dir, LOCK_FILE));
      symlinkSync(`${holder.pid}@${BOOT}`, join(dir, LOCK_FILE)); // ip's pid: node runs as it (exec)
      await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({ code: "AGENT_STATE_DIR_LOCKED" });
      rmSync(join(dir, LOCK_FILE));
      symlinkSync(named, join(dir, LOCK_FILE));
    } finally {
      holder.kill("SIGKILL");
      await new Promise((r) => holder.once("exit", r));
      await ns.destroy();
    }
    const taken = await StateDirLock.acquire(dir);
    expect(readlinkSync(join(dir, LOCK_FILE))).toMatch(new RegExp(`^${process.pid}@${BOOT}@`));
    expect(readdirSync(dir)).toEqual([LOCK_FILE]);
    await taken.release();
  });

  // Agents in several network namespaces (so none is stopped by another's socket) all find one
  // stale lock at once and take it over: exactly one holds the dir, every time. Before, a taker
  // compared the moved lock's inode with the one it judged, which ext4 gives at once to the next
  // lock made: two takers both won, or one removed a third's lock that it had moved aside.
  it.skipIf(!canUseNetns())(
    "is taken over by exactly one of several agents at once",
    async () => {
      const code = `const m = await import(${JSON.stringify(pathToFileURL(join(process.cwd(), "dist/src/agent/state-dir.js")).href)});
      let held;
      for await (const line of (await import("node:readline")).createInterface({ input: process.stdin })) {
        if (line === "release") { await held?.release(); held = undefined; process.stdout.write("released\\n"); continue; }
        try { held = await m.StateDirLock.acquire(line); process.stdout.write("won " + process.pid + "\\n"); }
        catch (e) { process.stdout.write((e.code ?? e.message) + "\\n"); }
      }`;
      const nss: Netns[] = [];
      const agents: { child: ReturnType<typeof spawn>; lines: string[]; waiting: ((l: string) => void)[] }[] = [];
      try {
        for (let i = 0; i < 4; i++) nss.push(await Netns.create(`sdrace${i}`));
        for (const ns of nss) {
          const child = spawn("ip", ["netns", "exec", ns.name, process.execPath, "--input-type=module", "-e", code], {
            stdio: ["pipe", "pipe", "inherit"],
          });
          const agent = { child, lines: [] as string[], waiting: [] as ((l: string) => void)[] };
          let rest = "";
          child.stdout!.on("data", (d: Buffer) => {
            const parts = (rest + d.toString()).split("\n");
            rest = parts.pop()!;
            for (const l of parts) agent.waiting.shift()!(l);
          });
          agents.push(agent);
        }
        const ask = (line: string) =>
          Promise.all(
            agents.map(
              (a) =>
                new Promise<string>((r) => {
                  a.waiting.push(r);
                  a.child.stdin!.write(`${line}\n`);
                }),
            ),
          );
        for (let i = 0; i < 300; i++) {
          const dir = join(base, "race", String(i));
          mkdirSync(dir, { recursive: true });
          symlinkSync("1@an-earlier-boot@1@1@1", join(dir, LOCK_FILE));
          const answers = await ask(dir);
          const won = answers.filter((a) => a.startsWith("won "));
          expect({ i, answers: answers.filter((a) => !a.startsWith("won ")).sort(), won: won.length }).toEqual({
            i,
            answers: ["AGENT_STATE_DIR_LOCKED", "AGENT_STATE_DIR_LOCKED", "AGENT_STATE_DIR_LOCKED"],
            won: 1,
          });
          // The winner's lock names it: in its place, or (a taker that moved it aside found the
          // place taken, by a loser's lock that stays until that loser exits) moved aside.
          const locks = readdirSync(dir).map((name) => readlinkSync(join(dir, name)));
          expect({ i, held: locks.some((l) => l.startsWith(`${won[0].slice(4)}@`)) }).toEqual({ i, held: true });
          await ask("release");
        }
      } finally {
        for (const a of agents) {
          a.child.kill("SIGKILL");
          await new Promise((r) => (a.child.exitCode === null ? a.child.once("exit", r) : r(null)));
        }
        for (const ns of nss) await ns.destroy();
      }
    },
    120_000,
  );

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
      expect(readlinkSync(join(dir, LOCK_FILE))).toMatch(new RegExp(`^${process.pid}@${BOOT}@`));
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

  // A taker may leave the holder's live lock moved aside, another's lock in its place. Before,
  // release removed only the lock in place that named it (read, then removed by name: another's
  // placed in between went too), so the moved copy outlived it and, naming a pid of another PID
  // namespace (held, as far as can be told), refused every later agent for good, naming a
  // weft.lock that did not exist.
  it("releases its lock also where moved aside, and never another's", async () => {
    const dir = join(base, "aside", "state");
    const lock = await StateDirLock.acquire(dir);
    const aside = join(dir, `.${LOCK_FILE}.00000000000000aa.aside`);
    renameSync(join(dir, LOCK_FILE), aside);
    const other = `1@${BOOT}@1@1@1`; // a live agent of another network and PID namespace
    symlinkSync(other, join(dir, LOCK_FILE));
    await lock.release();
    expect(readdirSync(dir)).toEqual([LOCK_FILE]);
    expect(readlinkSync(join(dir, LOCK_FILE))).toBe(other);
    // Found moved aside (its place empty), another's lock is named where it is.
    renameSync(join(dir, LOCK_FILE), aside);
    await expect(StateDirLock.acquire(dir)).rejects.toMatchObject({
      code: "AGENT_STATE_DIR_LOCKED",
      message: expect.stringContaining(`see ${aside})`),
    });
    expect(readdirSync(dir)).toEqual([`.${LOCK_FILE}.00000000000000aa.aside`]);
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

// A write the rename made is not reported undone when the directory fsync after it fails (here
// open(dir) is refused: a dir writable but not readable, as a user root's DAC override does not
// cover); a sync write cut short by the file size limit fails and leaves the old file whole.
describe("atomic write", () => {
  const runAs = (args: string[], dir: string, code: string) =>
    spawnSync("prlimit", [...args, process.execPath, "--input-type=module", "-e", code], {
      encoding: "utf8",
      cwd: dir,
    });
  // Root without its capabilities (no CAP_DAC_OVERRIDE) is held to a dir's modes, as nobody is,
  // yet may read a checkout under a 0700 dir (CI's mktemp -d) to import weft, which nobody may not.
  const withoutCaps = (dir: string, code: string) =>
    spawnSync(
      "setpriv",
      ["--bounding-set=-all", "--inh-caps=-all", "--", process.execPath, "--input-type=module", "-e", code],
      { encoding: "utf8", cwd: dir },
    );
  const url = (p: string) => pathToFileURL(join(process.cwd(), "dist", "src", p)).href;

  it("saves lease state whose directory cannot be synced, logging that", () => {
    const dir = join(base, "unsynced");
    mkdirSync(dir);
    chmodSync(dir, 0o300); // its owner may make and rename files in it, not open it to sync
    const code = `const { FileLeaseStore } = await import(${JSON.stringify(url("control/lease/store.js"))});
      const logged = [];
      const store = new FileLeaseStore(${JSON.stringify(dir)}, 4, { warn: (o) => logged.push(o.code) });
      await store.save({ node: "n1", fingerprint: "f", network: "198.19.0.0/16", lease: null, ring: { seeds: [], runs: [] } }).then(
        () => console.log(JSON.stringify(logged)), (e) => console.log(e.code));`;
    const out = withoutCaps(dir, code);
    expect(out.stdout.trim(), out.stderr).toBe('["LEASE_STATE_DIR_SYNC_FAILED"]');
    chmodSync(dir, 0o700);
    expect(JSON.parse(readFileSync(join(dir, "lease-state.json"), "utf8")).node).toBe("n1");
  });

  it("writes all of the data synchronously, or fails and leaves the file as it was", () => {
    const dir = join(base, "short");
    mkdirSync(dir);
    writeFileSync(join(dir, "vtep-mac"), "old\n");
    const code = `const { writeFileAtomicSync } = await import(${JSON.stringify(url("fs/atomic-write.js"))});
      try { writeFileAtomicSync("vtep-mac", "x".repeat(5000)); console.log("written"); } catch (e) { console.log(e.code); }`;
    expect(runAs(["--fsize=1000", "--"], dir, code).stdout.trim()).toBe("EFBIG");
    expect(readFileSync(join(dir, "vtep-mac"), "utf8")).toBe("old\n");
    expect(readdirSync(dir)).toEqual(["vtep-mac"]);
  });
});
