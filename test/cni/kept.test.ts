// The delegate config the plugin keeps per container (dataDir/<id>) and what DEL does with it
// when things went wrong: a damaged file, an ADD whose delegate failed and could not clean up, a
// config whose cniVersion changed since ADD. The plugin runs as a runtime runs it (the installed
// launcher, CNI_* and stdin), in front of a fake delegate that logs its calls and fails on demand.
import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CniError } from "../../src/cni/errors.js";
import { type CniArgs, execPlugin } from "../../src/cni/exec.js";
import { installPlugin } from "../../src/cni/install.js";
import { projectFile } from "../../src/paths.js";
import { running } from "../../src/lab/netns.js";
import { networkGcLockName } from "../../src/cni/plugin.js";
import { bindAbstract } from "../../src/util/abstract-socket.js";
import { eventually } from "../agent/support.js";
import { type FakeDelegate, fakeDelegate } from "./fake-delegate.js";
import { mayRun } from "../support/netns.js";
import { ageKept } from "./kept-age.js";

describe("weft cni: the kept delegate config", () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-cni-kept-"));
  const dataDir = join(dir, "data");
  const subnetFile = join(dir, "subnet.env");
  let fake: FakeDelegate;
  let flannel: string;
  const conf = (extra: object = {}) => ({
    cniVersion: "1.0.0",
    name: "cbr0",
    type: "flannel",
    subnetFile,
    dataDir,
    delegate: { type: "fake" },
    ...extra,
  });
  const args = (command: CniArgs["command"], containerId: string): CniArgs => ({
    command,
    containerId,
    netns: "/proc/self/ns/net", // the fake delegate never enters it
    ifName: "eth0",
    path: [join(dir, "bin"), fake.dir],
  });
  const run = (command: CniArgs["command"], containerId: string, extra: object = {}) =>
    execPlugin("flannel", conf(extra), args(command, containerId));
  const kept = () => (existsSync(dataDir) ? readdirSync(dataDir) : []);

  beforeAll(async () => {
    flannel = await installPlugin(join(dir, "bin"));
    fake = fakeDelegate(join(dir, "plugins"));
    mkdirSync(dataDir);
    writeFileSync(
      subnetFile,
      "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    ["empty", ""],
    ["cut short", '{"cniVersion":"1.0.0","name":"cbr0","ty'],
  ])("a damaged (%s) kept config: DEL says so on stderr, removes it and succeeds; CHECK fails (6)", (_, text) => {
    const id = `damaged-${text.length}`;
    writeFileSync(join(dataDir, id), text);
    const check = spawnSync(flannel, [], {
      input: JSON.stringify(conf({ prevResult: { cniVersion: "1.0.0", ips: [] } })),
      env: {
        CNI_COMMAND: "CHECK",
        CNI_CONTAINERID: id,
        CNI_NETNS: "/proc/self/ns/net",
        CNI_IFNAME: "eth0",
        CNI_PATH: fake.dir,
      },
      encoding: "utf8",
    });
    expect(check.status).toBe(1);
    expect(JSON.parse(check.stdout)).toMatchObject({ code: 6, msg: expect.stringMatching(/is damaged/) });
    // A DEL failing forever would leave the pod Terminating; flannel's plugin, too, forgets the file.
    const del = spawnSync(flannel, [], {
      input: JSON.stringify(conf()),
      env: { CNI_COMMAND: "DEL", CNI_CONTAINERID: id, CNI_IFNAME: "eth0", CNI_PATH: fake.dir },
      encoding: "utf8",
    });
    expect({ status: del.status, stdout: del.stdout }).toEqual({ status: 0, stdout: "" });
    expect(del.stderr).toMatch(new RegExp(`${join(dataDir, id)} .*is damaged.*removed`));
    expect(kept()).not.toContain(id);
    expect(fake.calls().filter((c) => c.endsWith(id))).toEqual([]);
  });

  it("ADD whose delegate fails: the cleanup DEL runs, and the kept config goes only once that DEL succeeded", async () => {
    fake.fail("ADD", true);
    fake.fail("DEL", true);
    try {
      const e = await run("ADD", "a1").catch((x: unknown) => x);
      expect(e).toBeInstanceOf(CniError);
      expect(e).toMatchObject({ cniCode: 11, message: "flannel: fake: fake ADD failure" });
      // Its DEL failed too: what ADD took may still be held, and the runtime's DEL must retry it.
      expect(fake.calls().filter((c) => c.endsWith(" a1"))).toEqual(["ADD a1", "DEL a1"]);
      expect(kept()).toContain("a1");
      await expect(run("DEL", "a1")).rejects.toMatchObject({ cniCode: 11 });
      expect(kept()).toContain("a1");
      fake.fail("DEL", false);
      expect(await run("DEL", "a1")).toBeUndefined();
      expect(fake.calls().filter((c) => c.endsWith(" a1"))).toEqual(["ADD a1", "DEL a1", "DEL a1", "DEL a1"]);
      expect(kept()).not.toContain("a1");
      // With a cleanup DEL that works, nothing is kept after the failed ADD.
      await expect(run("ADD", "a2")).rejects.toMatchObject({ cniCode: 11 });
      expect(fake.calls().filter((c) => c.endsWith(" a2"))).toEqual(["ADD a2", "DEL a2"]);
      expect(kept()).not.toContain("a2");
    } finally {
      fake.fail("ADD", false);
      fake.fail("DEL", false);
    }
  });

  it.each([undefined, "", "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9"])(
    "DEL with cniVersion %j: succeeds for an unknown container, and runs what ADD kept",
    async (v) => {
      const extra = { cniVersion: v };
      expect(await run("DEL", "never-added", extra)).toBeUndefined();
      // Added under 1.0.0; the conflist changed before the pod went.
      const id = `v-${v ?? "absent"}`;
      expect(await run("ADD", id)).toMatchObject({ cniVersion: "1.0.0" });
      expect(await run("DEL", id, extra)).toBeUndefined();
      expect(fake.calls().filter((c) => c.endsWith(` ${id}`))).toEqual([`ADD ${id}`, `DEL ${id}`]);
      expect(kept()).not.toContain(id);
    },
  );

  it("a delegate of CNI 1.1.0 is asked too: STATUS fails with its error, GC is forwarded with the valid attachments after the stale ones' DEL", async () => {
    const v110 = { cniVersion: "1.1.0" };
    const gcArgs: CniArgs = { command: "GC", path: [join(dir, "bin"), fake.dir] };
    expect(await execPlugin("flannel", conf(v110), { command: "STATUS", path: gcArgs.path })).toBeUndefined();
    expect(fake.calls().at(-1)?.trim()).toBe("STATUS");
    fake.fail("STATUS", true);
    try {
      await expect(execPlugin("flannel", conf(v110), { command: "STATUS", path: gcArgs.path })).rejects.toMatchObject({
        cniCode: 11,
        message: "flannel: fake: fake STATUS failure",
      });
    } finally {
      fake.fail("STATUS", false);
    }
    await run("ADD", "gc-live");
    await run("ADD", "gc-stale");
    const valid = { "cni.dev/valid-attachments": [{ containerID: "gc-live", ifname: "eth0" }] };
    await ageKept(dataDir);
    // A failing DEL of one stale attachment stops neither the others nor the delegate's GC; GC then reports it.
    fake.fail("DEL", true);
    try {
      await expect(execPlugin("flannel", conf({ ...v110, ...valid }), gcArgs)).rejects.toMatchObject({
        cniCode: 11,
        message: expect.stringMatching(/^flannel: GC: .*fake DEL failure/),
      });
    } finally {
      fake.fail("DEL", false);
    }
    expect(kept()).toEqual(expect.arrayContaining(["gc-live", "gc-stale"]));
    expect(await execPlugin("flannel", conf({ ...v110, ...valid }), gcArgs)).toBeUndefined();
    expect(kept()).toContain("gc-live");
    expect(kept()).not.toContain("gc-stale");
    expect(
      fake
        .calls()
        .filter((c) => /^(DEL gc-|GC)/.test(c))
        .map((c) => c.trim()),
    ).toEqual(["DEL gc-stale", "GC", "DEL gc-stale", "GC"]);
    // Another network's pod kept in the same dataDir: its runtime's list is not this one.
    await run("ADD", "gc-other", { name: "other-net" });
    await ageKept(dataDir);
    expect(await execPlugin("flannel", conf({ ...v110, "cni.dev/valid-attachments": [] }), gcArgs)).toBeUndefined();
    expect(kept()).toContain("gc-other");
    expect(kept()).not.toContain("gc-live");
    expect(fake.calls().filter((c) => / gc-other$/.test(c.trim()))).toEqual(["ADD gc-other"]);
    expect(await run("DEL", "gc-other", { name: "other-net" })).toBeUndefined();
    // Not for a 1.0.0 config: STATUS and GC came with 1.1.0.
    await expect(execPlugin("flannel", conf({ ...valid }), gcArgs)).rejects.toMatchObject({ cniCode: 1 });
  });

  it("GC that runs out of file descriptors (to bind an attachment's lock, to read its file again under it) reports each attachment it leaves (5) rather than take it for an ADD running or gone", async () => {
    const v110 = { cniVersion: "1.1.0" };
    const ids = Array.from({ length: 120 }, (_, i) => `fd-${i}`);
    for (const id of ids)
      writeFileSync(
        join(dataDir, id),
        JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", type: "fake", "weft.ifName": "eth0" }),
      );
    await ageKept(dataDir);
    const gcArgs: CniArgs = { command: "GC", path: [join(dir, "bin"), fake.dir] };
    // Each lock GC holds is a descriptor: fewer allowed than the attachments it deletes (Node.js
    // itself needs some 20). Which call fails first (a lock's bind, a file's read, a DEL's spawn)
    // depends on how many Node.js holds.
    const limited = execPlugin("flannel", conf({ ...v110, "cni.dev/valid-attachments": [] }), gcArgs, {
      wrap: ["prlimit", "--nofile=128:128", "--"],
    });
    const e = (await limited.catch((x: unknown) => x)) as CniError;
    expect(e).toMatchObject({
      cniCode: 5,
      message: expect.stringMatching(/fd-\d+.*EMFILE/),
    });
    const left = kept().filter((f) => f.startsWith("fd-"));
    expect(left.length).toBeGreaterThan(0);
    // One failure (each saying EMFILE) for each attachment left: none left unsaid.
    expect(e.message.match(/EMFILE/g)).toHaveLength(left.length);
    // Kept, not lost: a GC with descriptors enough deletes them.
    expect(await execPlugin("flannel", conf({ ...v110, "cni.dev/valid-attachments": [] }), gcArgs)).toBeUndefined();
    expect(kept().filter((f) => f.startsWith("fd-"))).toEqual([]);
    expect(fake.calls().filter((c) => c.startsWith("DEL fd-")).length).toBeGreaterThanOrEqual(ids.length);
  });

  it("GC gives the delegate's GC the attachments it leaves with the runtime's list (an ADD less than a minute ago) and those an ADD kept during its DELs, which that GC would free; the lock of one it leaves goes at once: an ADD of it during the GC's DELs works", async () => {
    const v110 = { cniVersion: "1.1.0" };
    const gcArgs: CniArgs = { command: "GC", path: [join(dir, "bin"), fake.dir] };
    const valid = [{ containerID: "spare-listed", ifname: "eth0" }];
    writeFileSync(
      join(dataDir, "spare-gone"),
      JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", type: "fake", "weft.ifName": "eth0" }),
    );
    await ageKept(dataDir);
    await run("ADD", "spare-fresh");
    fake.hold("DEL", true);
    let gc: Promise<unknown> | undefined;
    try {
      gc = execPlugin("flannel", conf({ ...v110, "cni.dev/valid-attachments": valid }), gcArgs);
      await eventually(
        "GC's DEL of spare-gone",
        async () => fake.calls(),
        (c) => c.includes("DEL spare-gone"),
      );
      expect(await run("ADD", "spare-fresh")).toMatchObject({ cniVersion: "1.0.0" });
      // A new pod, after the runtime's list and GC's listing: its address must survive the delegate's GC.
      expect(await run("ADD", "spare-new")).toMatchObject({ cniVersion: "1.0.0" });
      fake.hold("DEL", false);
      expect(await gc).toBeUndefined();
    } finally {
      fake.hold("DEL", false);
      await gc?.catch(() => undefined);
    }
    expect(kept()).toContain("spare-fresh");
    expect(kept()).not.toContain("spare-gone");
    const forwarded = fake.lastGc()["cni.dev/valid-attachments"] as object[];
    expect(forwarded.slice(0, valid.length)).toEqual(valid);
    expect(forwarded.slice(valid.length)).toEqual(
      expect.arrayContaining([
        { containerID: "spare-fresh", ifname: "eth0" },
        { containerID: "spare-new", ifname: "eth0" },
      ]),
    );
    expect(forwarded).toHaveLength(valid.length + 2);
    expect(await run("DEL", "spare-fresh")).toBeUndefined();
    expect(await run("DEL", "spare-new")).toBeUndefined();
  });

  it("an ADD on the network while the delegate's GC runs keeps its file, then waits for that GC to end: its delegate's ADD never runs then unspared (its address freed), and it succeeds after", async () => {
    const gcArgs: CniArgs = { command: "GC", path: [join(dir, "bin"), fake.dir] };
    const own = { dataDir: join(dir, "gc-add") }; // none of the other tests' files for this GC to delete
    const gcs = () => fake.calls().filter((c) => c.startsWith("GC")).length;
    const before = gcs();
    fake.hold("GC", true);
    let gc: Promise<unknown> | undefined;
    let add: Promise<unknown> | undefined;
    try {
      gc = execPlugin("flannel", conf({ ...own, cniVersion: "1.1.0", "cni.dev/valid-attachments": [] }), gcArgs);
      // GC's last listing done: the delegate's GC is running (held).
      await eventually(
        "the delegate's GC",
        async () => gcs(),
        (n) => n > before,
      );
      add = run("ADD", "during-gc", own);
      // A bound for the ADD to get that far, not a speed: unguarded, it is done well within.
      await Promise.race([add.catch(() => undefined), sleep(5_000)]);
      const duringGc = fake.calls().includes("ADD during-gc");
      const keptDuringGc = readdirSync(own.dataDir);
      fake.hold("GC", false);
      expect(await gc).toBeUndefined();
      expect({ duringGc, keptDuringGc, spared: fake.lastGc()["cni.dev/valid-attachments"] }).toEqual({
        duringGc: false,
        keptDuringGc: ["during-gc"],
        spared: [],
      });
      expect(await add).toMatchObject({ cniVersion: "1.0.0" });
    } finally {
      fake.hold("GC", false);
      await gc?.catch(() => undefined);
      await add?.catch(() => undefined);
    }
    expect(readdirSync(own.dataDir)).toEqual(["during-gc"]);
    expect(await run("DEL", "during-gc", own)).toBeUndefined();
  });

  it("an ADD while the network's GC lock is held (a process the delegate's GC left with the socket) fails with 11 after 10 s, naming the command that finds the holder, and leaves the kept files as they were", async () => {
    const own = { dataDir: join(dir, "gc-held") };
    expect(await run("ADD", "live", own)).toMatchObject({ cniVersion: "1.0.0" });
    const live = readFileSync(join(own.dataDir, "live"), "utf8");
    // Aged, as a gone pod's file GC would delete: put back with a fresh time, GC would spare it.
    await ageKept(own.dataDir);
    const aged = statSync(join(own.dataDir, "live")).mtimeMs;
    const held = await bindAbstract(networkGcLockName(own.dataDir, "cbr0"));
    if (!held) throw new Error("the network's GC lock is bound already");
    let e: unknown;
    let again: unknown;
    try {
      // A new attachment, and a re-ADD of a live one with another config (both wait the 10 s at once).
      [e, again] = await Promise.all([
        run("ADD", "held", own).catch((x: unknown) => x),
        run("ADD", "live", { ...own, delegate: { type: "fake", mtu: 1400 } }).catch((x: unknown) => x),
      ]);
    } finally {
      held.close();
    }
    expect(e).toMatchObject({ cniCode: 11 });
    expect(again).toMatchObject({ cniCode: 11 });
    // No delegate ran: nothing for a DEL of "held" to do, and "live"'s DEL still runs its own config.
    expect(readdirSync(own.dataDir)).toEqual(["live"]);
    expect(readFileSync(join(own.dataDir, "live"), "utf8")).toBe(live);
    expect(statSync(join(own.dataDir, "live")).mtimeMs).toBe(aged);
    const find = /`(ss -xlp \| grep @weft-cni-gc:[0-9a-f]+)`/.exec((e as CniError).message)?.[1];
    expect(find, (e as CniError).message).toBeDefined();
    // The command as given finds this process, which held it (it holds it no longer: bind again).
    const rebound = await bindAbstract(networkGcLockName(own.dataDir, "cbr0"));
    try {
      expect(spawnSync("sh", ["-c", find ?? "false"], { encoding: "utf8" }).stdout).toContain(`pid=${process.pid},`);
    } finally {
      rebound?.close();
    }
    expect(await run("DEL", "live", own)).toBeUndefined();
  }, 30_000);

  it("a plugin run with a timeout that leaves a child holding its output: the run fails once that long has passed, and the child is killed with its process group", async () => {
    const bin = join(dir, "leaves-child");
    mkdirSync(bin);
    const pidFile = join(bin, "child.pid");
    writeFileSync(join(bin, "leaver"), `#!/bin/sh\nsleep 300 &\necho $! > '${pidFile}'\nexit 0\n`, { mode: 0o755 });
    await expect(execPlugin("leaver", {}, { command: "GC", path: [bin] }, { timeoutMs: 1_000 })).rejects.toMatchObject({
      cniCode: 100,
      message: expect.stringMatching(/did not end within 1 s .*process group was killed/),
    });
    const child = Number(readFileSync(pidFile, "utf8"));
    // Gone, or a zombie (its parent exited; whoever adopts it may reap it late).
    try {
      await eventually(
        "the child killed",
        async () => running(child),
        (a) => !a,
      );
    } finally {
      if (running(child)) process.kill(child, "SIGKILL");
    }
  });

  it("a plugin run with a timeout that exits 124 at once (timeout's code when it timed out) fails with its own result: its CNI error, else its exit status", async () => {
    const bin = join(dir, "exits-124");
    mkdirSync(bin);
    writeFileSync(
      join(bin, "own124"),
      `#!/bin/sh\necho '{"cniVersion":"1.0.0","code":11,"msg":"own failure"}'\nexit 124\n`,
      { mode: 0o755 },
    );
    writeFileSync(join(bin, "bare124"), "#!/bin/sh\necho 'my reason' >&2\nexit 124\n", { mode: 0o755 });
    const run124 = (type: string) =>
      execPlugin(type, {}, { command: "ADD", path: [bin] }, { timeoutMs: 60_000 }).catch((e: unknown) => e);
    expect(await run124("own124")).toMatchObject({ cniCode: 11, message: "own124: own failure" });
    expect(await run124("bare124")).toMatchObject({
      cniCode: 100,
      message: "plugin bare124 ADD failed (exit 124) without a CNI error",
      details: "my reason",
    });
  });

  it("a plugin run with a timeout that cannot be run (a missing interpreter, a directory: timeout's 127 and 126) fails with 5, as one run without; a plugin's own 127 stays its crash (100)", async () => {
    const bin = join(dir, "cannot-run");
    mkdirSync(bin);
    writeFileSync(join(bin, "noint"), "#!/nonexistent/sh\nexit 0\n", { mode: 0o755 });
    mkdirSync(join(bin, "adir")); // searchable, so found as executable; exec fails with EACCES
    writeFileSync(join(bin, "own127"), "#!/bin/sh\nno-such-command-in-weft-test\n", { mode: 0o755 });
    const attempt = (type: string, timeoutMs?: number) =>
      execPlugin(type, {}, { command: "ADD", path: [bin] }, { timeoutMs }).catch((e: unknown) => e);
    for (const type of ["noint", "adir"]) {
      const bounded = await attempt(type, 60_000);
      expect(bounded, type).toMatchObject({ cniCode: 5 });
      expect((bounded as CniError).message).toMatch(new RegExp(`^cannot run plugin ${join(bin, type)}: `));
      expect(await attempt(type), type).toMatchObject({ cniCode: 5 });
    }
    expect(await attempt("own127", 60_000)).toMatchObject({
      cniCode: 100,
      message: "plugin own127 ADD failed (exit 127) without a CNI error",
    });
  });

  /** Runs `script` (an ES module, with execPlugin and installPlugin of dist/ imported) in a Node.js of its own, under argv `under`. */
  const inNode = (script: string, under: string[] = []) => {
    const imports = `import { execPlugin } from ${JSON.stringify(projectFile("dist", "src", "cni", "exec.js"))};
import { installPlugin } from ${JSON.stringify(projectFile("dist", "src", "cni", "install.js"))};
`;
    const [cmd, ...argv] = [...under, process.execPath, "--input-type=module", "-e", imports + script];
    return spawnSync(cmd, argv, { encoding: "utf8", timeout: 30_000 });
  };
  /** Whether `over` can be bound on the host's timeout in a mount namespace: else a skip, or under CI=true a throw. */
  const canBindOverTimeout = (over: string, install: string) =>
    mayRun(
      process.getuid?.() === 0 && spawnSync("unshare", ["--version"]).status === 0 && existsSync(over),
      `this test needs root, unshare (apt-get install util-linux) and ${over} (${install})`,
    );
  /** inNode's run with `over` bound on /usr/bin/timeout and /bin/timeout, in a mount namespace of its own (private: never seen outside it). */
  const withTimeout = (over: string, script: string) => {
    const bind = 'for f in /usr/bin/timeout /bin/timeout; do [ -e "$f" ] && mount --bind "$0" "$f"; done; exec "$@"';
    const r = inNode(script, ["unshare", "--mount", "--propagation=private", "sh", "-c", bind, over]);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };

  it.skipIf(!canBindOverTimeout("/usr/bin/busybox", "apt-get install busybox-static"))(
    "with busybox's timeout at /usr/bin/timeout, which refuses --kill-after: a plugin run fails with 5 saying to install coreutils, and install-cni without --bundle refuses",
    () => {
      const bin = join(dir, "busybox-timeout");
      mkdirSync(bin);
      writeFileSync(join(bin, "fine"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      const out = withTimeout(
        "/usr/bin/busybox",
        `const run = await execPlugin("fine", {}, { command: "ADD", path: [${JSON.stringify(bin)}] }, { timeoutMs: 60_000 }).catch((e) => e);
const install = await installPlugin(${JSON.stringify(join(bin, "install"))}).catch((e) => e);
console.log(JSON.stringify({ run: { cniCode: run.cniCode, message: run.message, details: run.details }, install: { code: install.code, message: install.message } }));`,
      );
      expect(out.run).toMatchObject({
        cniCode: 5,
        message: expect.stringMatching(/^cannot bound plugin fine's run: \/usr\/bin\/timeout refuses --kill-after/),
        details: expect.stringMatching(/install coreutils/),
      });
      expect(out.install).toMatchObject({
        code: "CNI_INSTALL_NO_TIMEOUT",
        message: expect.stringMatching(/\/usr\/bin\/timeout --kill-after=1s 1s true` failed.*install coreutils/),
      });
      expect(existsSync(join(bin, "install", "flannel"))).toBe(false);
    },
  );

  it.skipIf(!canBindOverTimeout("/bin/bash", "apt-get install bash"))(
    "with a timeout that is not GNU's but takes --kill-after (uutils', as Ubuntu 25.10's: its name in --version, its messages after `timeout: `): install-cni installs, and one that cannot exec the plugin is 5",
    () => {
      const bin = join(dir, "uutils-timeout");
      mkdirSync(bin);
      copyFileSync("/usr/bin/timeout", join(bin, "gnu-timeout"));
      // GNU's behind uutils' face: its messages start with its argv[0], here uutils' "timeout".
      writeFileSync(
        join(bin, "timeout"),
        `#!/bin/bash\nif [ "$1" = --version ]; then echo 'timeout (uutils coreutils) 0.2.2'; exit 0; fi\nexec -a timeout '${join(bin, "gnu-timeout")}' "$@"\n`,
        { mode: 0o755 },
      );
      writeFileSync(join(bin, "noint"), "#!/nonexistent/sh\nexit 0\n", { mode: 0o755 });
      const out = withTimeout(
        join(bin, "timeout"),
        `const run = await execPlugin("noint", {}, { command: "ADD", path: [${JSON.stringify(bin)}] }, { timeoutMs: 60_000 }).catch((e) => e);
const install = await installPlugin(${JSON.stringify(join(bin, "install"))}).catch((e) => e);
console.log(JSON.stringify({ run: { cniCode: run.cniCode, message: run.message }, install: typeof install === "string" ? install : install.message }));`,
      );
      expect(out.run).toMatchObject({
        cniCode: 5,
        message: expect.stringMatching(/^cannot run plugin .*noint: timeout: /),
      });
      expect(out.install).toBe(join(bin, "install", "flannel"));
    },
  );

  it.skipIf(!canBindOverTimeout("/bin/sh", "apt-get install dash"))(
    "a timeout that fails itself (125: its fork refused, EAGAIN under a pids limit) fails the run with 11, to try again later",
    () => {
      const bin = join(dir, "timeout-125");
      mkdirSync(bin);
      // What coreutils' timeout says and does when its fork fails: the plugin never runs.
      writeFileSync(
        join(bin, "timeout"),
        `#!/bin/sh\necho "$0: fork system call failed: Resource temporarily unavailable" >&2\nexit 125\n`,
        { mode: 0o755 },
      );
      writeFileSync(join(bin, "fine"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      const out = withTimeout(
        join(bin, "timeout"),
        `const run = await execPlugin("fine", {}, { command: "ADD", path: [${JSON.stringify(bin)}] }, { timeoutMs: 60_000 }).catch((e) => e);
console.log(JSON.stringify({ cniCode: run.cniCode, message: run.message }));`,
      );
      expect(out).toMatchObject({
        cniCode: 11,
        message: expect.stringMatching(
          /^cannot run plugin fine ADD: \/usr\/bin\/timeout failed \(.*fork system call failed/,
        ),
      });
    },
  );

  it("a plugin's stderr is passed on to the caller's as it comes, and the end of it (64 KiB kept) is the details of its crash; a result over 1 MiB on stdout fails with 6", () => {
    const bin = join(dir, "chatty");
    mkdirSync(bin);
    writeFileSync(
      join(bin, "warns"),
      `#!/bin/sh\necho 'warns: a warning for the runtime' >&2\necho '{"cniVersion":"1.0.0","ips":[]}'\n`,
      { mode: 0o755 },
    );
    // 80 KiB of stderr before its last words.
    writeFileSync(
      join(bin, "crashes"),
      `#!/bin/sh\ni=0; while [ $i -lt 800 ]; do echo "noise line $i ................................................................................" >&2; i=$((i+1)); done\necho 'crashes: the last words' >&2\nexit 2\n`,
      { mode: 0o755 },
    );
    writeFileSync(
      join(bin, "huge"),
      `#!/bin/sh\nprintf '{"cniVersion":"1.0.0","ips":[],"dns":{"search":["'\nhead -c 2097152 /dev/zero | tr '\\0' x\nprintf '"]}}'\n`,
      { mode: 0o755 },
    );
    const r = inNode(`const path = [${JSON.stringify(bin)}];
const warns = await execPlugin("warns", {}, { command: "ADD", path }, { timeoutMs: 60_000 });
const crashes = await execPlugin("crashes", {}, { command: "ADD", path }).catch((e) => e);
const huge = await execPlugin("huge", {}, { command: "ADD", path }).then(() => "resolved", (e) => e);
console.log(JSON.stringify({ warns, crashes: { cniCode: crashes.cniCode, details: crashes.details }, huge: { cniCode: huge.cniCode, message: huge.message } }));`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain("warns: a warning for the runtime\n");
    expect(r.stderr).toContain("noise line 0 ");
    const out = JSON.parse(r.stdout);
    expect(out.warns).toEqual({ cniVersion: "1.0.0", ips: [] });
    expect(out.crashes.cniCode).toBe(100);
    expect(out.crashes.details).toMatch(/noise line 799 \.+\ncrashes: the last words$/);
    expect(out.huge).toMatchObject({
      cniCode: 6,
      message: expect.stringMatching(/^plugin huge ADD printed 2097\d+ bytes on stdout/),
    });
  });

  it("ADD whose delegate fails and then cannot be found for the cleanup DEL (it removed itself): the ADD's error is reported, and the kept config stays for the runtime's DEL", async () => {
    const own = join(dir, "vanish-data");
    const bin = join(dir, "vanish");
    mkdirSync(bin);
    writeFileSync(
      join(bin, "vanish"),
      `#!/bin/sh
cat >/dev/null
case $CNI_COMMAND in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}' ;;
ADD) rm -f "$0"; echo '{"cniVersion":"1.0.0","code":11,"msg":"vanish ADD failure"}'; exit 1 ;;
esac
`,
      { mode: 0o755 },
    );
    const e = await execPlugin("flannel", conf({ dataDir: own, delegate: { type: "vanish" } }), {
      ...args("ADD", "vanish-1"),
      path: [join(dir, "bin"), bin],
    }).catch((x: unknown) => x);
    expect(e).toMatchObject({ cniCode: 11, message: "flannel: vanish: vanish ADD failure" });
    expect(readdirSync(own)).toEqual(["vanish-1"]);
  });

  it("a plugin run with a timeout that leaves a child in its process group with its output closed: the run succeeds and the child is killed with the group", async () => {
    const bin = join(dir, "leaves-quiet-child");
    mkdirSync(bin);
    const pidFile = join(bin, "child.pid");
    // Such a child keeps what the plugin inherited (the network's GC socket) with no timer left.
    writeFileSync(join(bin, "quiet"), `#!/bin/sh\nsleep 300 >/dev/null 2>&1 &\necho $! > '${pidFile}'\nexit 0\n`, {
      mode: 0o755,
    });
    const child = () => Number(readFileSync(pidFile, "utf8"));
    try {
      expect(await execPlugin("quiet", {}, { command: "GC", path: [bin] }, { timeoutMs: 60_000 })).toBeUndefined();
      // Gone, or a zombie (its parent exited; whoever adopts it may reap it late).
      await eventually(
        "the child killed",
        async () => running(child()),
        (a) => !a,
      );
    } finally {
      if (existsSync(pidFile) && running(child())) process.kill(child(), "SIGKILL");
    }
  });

  it.each(["SIGKILL", "SIGTERM"] as const)(
    "a plugin run with a timeout that ignores SIGTERM, its caller ended meanwhile by %s (a runtime's timeout; passed on, ignored): it is still ended by the bound, with its process group",
    async (signal) => {
      const bin = join(dir, `stubborn-${signal}`);
      mkdirSync(bin);
      const pidFile = join(bin, "plugin.pid");
      // Ignored, SIGTERM stays ignored in the sleep it runs; 300 s at most, whatever happens.
      writeFileSync(
        join(bin, "stubborn"),
        `#!/bin/sh\ntrap '' TERM\necho $$ > '${pidFile}'\ni=0; while [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done\n`,
        { mode: 0o755 },
      );
      // The caller as weft's plugin is: a process of its own, which a runtime may kill.
      const caller = spawn(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `import { execPlugin } from ${JSON.stringify(projectFile("dist", "src", "cni", "exec.js"))};
await execPlugin("stubborn", {}, { command: "GC", path: [${JSON.stringify(bin)}] }, { timeoutMs: 1000 });`,
        ],
        { stdio: "ignore" },
      );
      const ended = new Promise<NodeJS.Signals | null>((resolve) => caller.on("exit", (_, s) => resolve(s)));
      let plugin: number | undefined;
      try {
        plugin = await eventually(
          "the plugin started",
          async () => (existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) : 0),
          (p) => p > 0,
        );
        caller.kill(signal);
        expect(await ended).toBe(signal);
        const pid = plugin;
        // 1 s, then SIGKILL 5 s after its SIGTERM: a wait far past that bound, never a speed.
        await eventually(
          "the plugin ended",
          async () => running(pid),
          (a) => !a,
          30_000,
        );
      } finally {
        if (caller.exitCode === null && caller.signalCode === null) caller.kill("SIGKILL");
        if (plugin !== undefined && running(plugin)) process.kill(plugin, "SIGKILL");
      }
    },
    60_000,
  );

  it("a SIGKILL to weft's plugin's whole process group during its delegate's ADD (in a group of its own) leaves that ADD going, holding the attachment's lock; it ends, and a DEL then runs", async () => {
    const own = { dataDir: join(dir, "add-group") };
    const adds = () => fake.calls().filter((c) => c === "ADD group-1").length;
    fake.hold("ADD", true);
    const weft = spawn(flannel, [], {
      env: {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "group-1",
        CNI_NETNS: "/proc/self/ns/net",
        CNI_IFNAME: "eth0",
        CNI_PATH: `${join(dir, "bin")}:${fake.dir}`,
      },
      stdio: ["pipe", "ignore", "ignore"],
      detached: true, // a group of its own, as a shell's job: to kill it whole
    });
    const ended = new Promise<NodeJS.Signals | null>((resolve) => weft.on("exit", (_, signal) => resolve(signal)));
    weft.stdin.end(JSON.stringify(conf(own)));
    let delegate: number | undefined;
    try {
      await eventually(
        "the delegate's ADD",
        async () => adds(),
        (n) => n === 1,
      );
      const pid = weft.pid!;
      // weft's one child: what runs its delegate (coreutils' timeout, leading a group of its own).
      [delegate] = await eventually(
        "the delegate's ADD",
        async () =>
          processes()
            .filter((p) => p.ppid === pid)
            .map((p) => p.pid),
        (l) => l.length === 1,
      );
      process.kill(-pid, "SIGKILL");
      expect(await ended).toBe("SIGKILL");
      expect(running(delegate)).toBe(true);
      // Its lock held by the delegate: a DEL waits (fails with 11 after 10 s, which the runtime retries).
      const del = execPlugin("flannel", conf(own), args("DEL", "group-1"));
      await sleep(1000);
      fake.hold("ADD", false);
      const leader = delegate;
      await eventually(
        "the delegate's ADD done",
        async () => running(leader),
        (a) => !a,
      );
      expect(await del).toBeUndefined();
      expect(fake.calls().filter((c) => c.endsWith(" group-1"))).toEqual(["ADD group-1", "DEL group-1"]);
      expect(existsSync(join(own.dataDir, "group-1"))).toBe(false);
    } finally {
      fake.hold("ADD", false);
      if (weft.exitCode === null && weft.signalCode === null) weft.kill("SIGKILL");
      if (delegate !== undefined && running(delegate)) process.kill(-delegate, "SIGKILL");
    }
  }, 30_000);

  it("a SIGTERM to weft's plugin while its delegate's GC runs (in a process group of its own, which a runtime's signal misses) ends that GC too, and weft by it", async () => {
    const own = { dataDir: join(dir, "gc-term") };
    const gcs = () => fake.calls().filter((c) => c.startsWith("GC")).length;
    const before = gcs();
    fake.hold("GC", true);
    const weft = spawn(flannel, [], {
      env: { CNI_COMMAND: "GC", CNI_PATH: `${join(dir, "bin")}:${fake.dir}` },
      stdio: ["pipe", "ignore", "ignore"],
    });
    const ended = new Promise<NodeJS.Signals | null>((resolve) => weft.on("exit", (_, signal) => resolve(signal)));
    weft.stdin.end(JSON.stringify(conf({ ...own, cniVersion: "1.1.0", "cni.dev/valid-attachments": [] })));
    let delegate: number | undefined;
    try {
      await eventually(
        "the delegate's GC",
        async () => gcs(),
        (n) => n > before,
      );
      // weft's child leading a group of its own: the delegate's GC (the launcher execs node).
      [delegate] = await eventually(
        "the delegate's GC in its own group",
        async () =>
          processes()
            .filter((p) => p.ppid === weft.pid && p.pgrp === p.pid)
            .map((p) => p.pid),
        (l) => l.length === 1,
      );
      weft.kill("SIGTERM");
      expect(await ended).toBe("SIGTERM");
      const pid = delegate;
      await eventually(
        "the delegate's GC ended",
        async () => running(pid),
        (a) => !a,
      );
    } finally {
      fake.hold("GC", false);
      if (weft.exitCode === null && weft.signalCode === null) weft.kill("SIGKILL");
      if (delegate !== undefined && running(delegate)) process.kill(-delegate, "SIGKILL");
    }
  });

  it("GC deletes at most 256 attachments, holding a lock for each, and says the rest are left for the next GC, which deletes them; the delegate's GC is told to spare those left", async () => {
    const many = join(dir, "many");
    mkdirSync(many);
    for (let i = 0; i < 260; i++)
      writeFileSync(
        join(many, `many-${i}`),
        JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", type: "fake", "weft.ifName": "eth0" }),
      );
    await ageKept(many);
    const gc = () => {
      const r = spawnSync(flannel, [], {
        input: JSON.stringify(conf({ cniVersion: "1.1.0", dataDir: many, "cni.dev/valid-attachments": [] })),
        env: { CNI_COMMAND: "GC", CNI_PATH: fake.dir },
        encoding: "utf8",
      });
      expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 0, stdout: "" });
      return r.stderr;
    };
    expect(gc()).toMatch(
      /GC: 4 more kept files of gone attachments are left for the next GC: one GC deletes at most 256/,
    );
    expect(readdirSync(many)).toHaveLength(4);
    const forwarded = () => fake.lastGc()["cni.dev/valid-attachments"] as Array<{ containerID: string }>;
    expect(
      forwarded()
        .map((a) => a.containerID)
        .sort(),
    ).toEqual(readdirSync(many).sort());
    expect(forwarded()).toEqual(readdirSync(many).map(() => expect.objectContaining({ ifname: "eth0" })));
    expect(gc()).not.toMatch(/left for the next GC/);
    expect(readdirSync(many)).toEqual([]);
    expect(forwarded()).toEqual([]);
  });

  it("files without weft's own layout: flannel's (no interface name: any interface's) and an older weft's (every interface in <id>)", async () => {
    const v110 = { cniVersion: "1.1.0" };
    const gcArgs: CniArgs = { command: "GC", path: [join(dir, "bin"), fake.dir] };
    const gc = async (valid: object[]) => {
      await ageKept(dataDir);
      return await execPlugin("flannel", conf({ ...v110, "cni.dev/valid-attachments": valid }), gcArgs);
    };
    const keep = (id: string, extra: object = {}) =>
      writeFileSync(join(dataDir, id), JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", type: "fake", ...extra }));
    keep("fl-1");
    keep("fl-2");
    // Flannel's plugin keeps one file per container, whatever the interface (net1 under Multus):
    // kept while any attachment of the container is listed; DEL of any interface runs it.
    for (const ifname of [undefined, "eth0", "net1"])
      expect(await gc([{ containerID: "fl-1", ifname }])).toBeUndefined();
    expect(kept()).toContain("fl-1");
    expect(fake.calls().filter((c) => c.endsWith(" fl-1"))).toEqual([]);
    expect(await execPlugin("flannel", conf(), { ...args("DEL", "fl-1"), ifName: "net1" })).toBeUndefined();
    expect(kept()).not.toContain("fl-1");
    expect(fake.calls().filter((c) => c.endsWith(" fl-1"))).toEqual(["DEL fl-1"]);
    // Its container no longer listed at all: GC runs it once (no host-local store to name interfaces: eth0).
    expect(await gc([{ containerID: "other", ifname: "net1" }])).toBeUndefined();
    expect(kept()).not.toContain("fl-2");
    expect(fake.calls().filter((c) => c.endsWith(" fl-2"))).toEqual(["DEL fl-2"]);
    // An older weft kept net1's config as <id>: DEL of eth0 is not its; DEL of net1 finds and runs it.
    keep("old-1", { "weft.ifName": "net1" });
    expect(await execPlugin("flannel", conf(), args("DEL", "old-1"))).toBeUndefined();
    expect(kept()).toContain("old-1");
    expect(await execPlugin("flannel", conf(), { ...args("DEL", "old-1"), ifName: "net1" })).toBeUndefined();
    expect(kept()).not.toContain("old-1");
    expect(fake.calls().filter((c) => c.endsWith(" old-1"))).toEqual(["DEL old-1"]);
    // The interface name names a file: never a path; and Linux's limit is 15 bytes, not characters.
    for (const ifName of ["../x", "é".repeat(8)])
      await expect(execPlugin("flannel", conf(), { ...args("ADD", "if-1"), ifName })).rejects.toMatchObject({
        cniCode: 4,
        message: expect.stringMatching(/CNI_IFNAME/),
      });
    expect(kept().filter((f) => f.startsWith("if-1"))).toEqual([]);
  });
});

/** The processes now, with their parent and process group. */
function processes(): { pid: number; ppid: number; pgrp: number }[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .flatMap((n) => {
      try {
        // After the command's closing parenthesis: state, ppid, pgrp.
        const stat = readFileSync(`/proc/${n}/stat`, "utf8");
        const [, ppid, pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return [{ pid: Number(n), ppid: Number(ppid), pgrp: Number(pgrp) }];
      } catch {
        return []; // ended meanwhile
      }
    });
}
