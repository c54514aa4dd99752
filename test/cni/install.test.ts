// `weft install-cni`: the launcher runtimes find under the type name, and the bundle for hosts
// without Node.js (Node.js and the plugin's files copied beside it), run as a runtime would with
// no Node.js on PATH; a plugin module importing what the bundle lacks is refused under a code.
import { execFile, spawnSync } from "node:child_process";
import {
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import {
  BUNDLE_GRACE_MS,
  BUNDLE_KEEP_SUPERSEDED,
  expireBundles,
  installPlugin,
  pluginModules,
} from "../../src/cni/install.js";
import { projectFile } from "../../src/paths.js";
import { fakeDelegate } from "./fake-delegate.js";

describe("weft install-cni", () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-cni-bin-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const version = (file: string) =>
    spawnSync(file, [], {
      input: '{"cniVersion":"0.4.0"}',
      env: { CNI_COMMAND: "VERSION", PATH: "/nonexistent" },
      encoding: "utf8",
    });

  it("writes an executable `flannel` that answers VERSION", async () => {
    const file = await installPlugin(dir);
    expect(file).toBe(join(dir, "flannel"));
    expect(statSync(file).mode & 0o111).toBe(0o111);
    expect(JSON.parse(version(file).stdout)).toEqual({
      cniVersion: "0.4.0",
      supportedVersions: ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    });
  });

  it("a launcher of before entry.js (it runs dist/src/cni/main.js), also through a symlink, still runs the plugin", () => {
    // An upgrade in place keeps such launchers: main.js must not become a plugin that prints
    // nothing and exits 0 (DEL "succeeding" without the delegate).
    const main = projectFile("dist", "src", "cni", "main.js");
    const linked = join(dir, "linked-main.js");
    symlinkSync(main, linked);
    for (const file of [main, linked]) {
      const old = join(dir, "old-launcher");
      writeFileSync(old, `#!/bin/sh\nexec '${process.execPath}' '${file}' "$@"\n`, { mode: 0o755 });
      expect(JSON.parse(version(old).stdout), file).toMatchObject({ cniVersion: "0.4.0" });
    }
  });

  it("--bundle: runs from its own copy of Node.js and files, nothing of this checkout", async () => {
    const file = await installPlugin(dir, { bundle: true });
    const copy = /"\$d"\/'(weft-cni\.flannel\.[^/']+)\/node' "\$d"\/'\1\/dist\/src\/cni\/entry\.js'/.exec(
      readFileSync(file, "utf8"),
    );
    expect(existsSync(join(dir, copy![1], "node"))).toBe(true);
    const r = version(file);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).supportedVersions).toContain("1.0.0");
    // A config error still comes back as CNI error JSON, so zod and the plugin's modules are all there.
    const bad = spawnSync(file, [], {
      input: "{}",
      env: { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c", CNI_IFNAME: "eth0", CNI_PATH: "/x", CNI_NETNS: "/x" },
      encoding: "utf8",
    });
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({
      code: 7,
      msg: expect.stringMatching(/^invalid network config: name/),
    });
  }, 60_000);

  it("--bundle into a bin dir reached through a symlink (as /opt/cni/bin often is): VERSION answers and DEL runs the delegate", async () => {
    const real = join(dir, "real-bin");
    mkdirSync(real);
    symlinkSync(real, join(dir, "linked-bin"));
    const file = await installPlugin(join(dir, "linked-bin"), { bundle: true });
    const r = version(file);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: "0.4.0" });
    // A DEL that did nothing would leak the pod's address and veth while reporting success.
    const fake = fakeDelegate(join(dir, "fake-plugins"));
    const dataDir = join(dir, "data");
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, "c1"), JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", type: "fake" }));
    const del = spawnSync(file, [], {
      input: JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", type: "flannel", dataDir }),
      env: { CNI_COMMAND: "DEL", CNI_CONTAINERID: "c1", CNI_IFNAME: "eth0", CNI_PATH: fake.dir, PATH: "/usr/bin:/bin" },
      encoding: "utf8",
    });
    expect({ status: del.status, stdout: del.stdout }).toEqual({ status: 0, stdout: "" });
    expect(fake.calls()).toEqual(["DEL c1"]);
    expect(existsSync(join(dataDir, "c1"))).toBe(false);
  }, 60_000);

  it("--bundle again while runtimes run the plugin: every run in between works, and the newest superseded copies are left (within the grace, but at most BUNDLE_KEEP_SUPERSEDED)", async () => {
    const bin = join(dir, "reinstalled");
    const file = await installPlugin(bin, { bundle: true });
    const first = /'(weft-cni\.flannel\.[^/']+)\/node'/.exec(readFileSync(file, "utf8"))![1]!;
    let installing = true;
    const failures: string[] = [];
    let runs = 0;
    // Plugin runs back to back, two at a time, as pods start and stop during an agent pod's restart.
    const runner = async () => {
      while (installing) {
        const r = await new Promise<{ code: number; out: string; err: string }>((resolve) => {
          const child = execFile(file, [], { env: { CNI_COMMAND: "VERSION", PATH: "/nonexistent" } }, (e, out, err) =>
            resolve({ code: e ? ((e.code as number) ?? -1) : 0, out, err }),
          );
          child.stdin!.on("error", () => undefined); // a plugin that failed to start reads nothing; its exit says so
          child.stdin!.end('{"cniVersion":"1.0.0"}');
        });
        runs++;
        if (r.code !== 0 || JSON.parse(r.out || "{}").cniVersion !== "1.0.0")
          failures.push(`exit ${r.code}: ${r.out}${r.err}`.slice(0, 300));
      }
    };
    const runners = [runner(), runner()];
    for (let i = 0; i < 5; i++) await installPlugin(bin, { bundle: true });
    installing = false;
    await Promise.all(runners);
    expect(runs).toBeGreaterThan(5);
    expect(failures).toEqual([]);
    // Five superseded within the grace, but a burst of installs must not keep ~100 MB each: the
    // first superseded goes.
    const left = readdirSync(bin).filter((n) => n.startsWith("weft-cni"));
    expect(left.length).toBe(1 + BUNDLE_KEEP_SUPERSEDED);
    expect(left).not.toContain(first);
    expect(left.filter((n) => readFileSync(file, "utf8").includes(`'${n}/node'`)).length).toBe(1);
    // The clock set back a day since: the copies' files are from its future, and still the oldest goes.
    const ahead = new Date(Date.now() + 86_400_000);
    for (const n of left) utimesSync(join(bin, n, "node"), ahead, ahead);
    await installPlugin(bin, { bundle: true });
    const after = readdirSync(bin).filter((n) => n.startsWith("weft-cni"));
    expect(after.length).toBe(1 + BUNDLE_KEEP_SUPERSEDED);
    expect(after.filter((n) => left.includes(n)).length).toBe(BUNDLE_KEEP_SUPERSEDED);
  }, 180_000);

  it("--bundle twice while a run has read the launcher (its Node.js slow to start under load): the run works; a copy superseded longer than the grace ago goes", async () => {
    const bin = join(dir, "held");
    const file = await installPlugin(bin, { bundle: true });
    const copyOf = () => /'(weft-cni\.flannel\.[^/']+)\/node'/.exec(readFileSync(file, "utf8"))![1]!;
    const first = copyOf();
    // The launcher's inode as a runtime's sh has it open, in the bin dir, where it finds its copy.
    const held = join(bin, "flannel-as-read");
    linkSync(file, held);
    await installPlugin(bin, { bundle: true });
    const second = copyOf();
    await installPlugin(bin, { bundle: true });
    const r = version(held);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: "0.4.0" });
    // The first copy superseded longer than the grace ago, the second not quite: the first goes.
    const ago = (ms: number) => new Date(Date.now() - ms);
    utimesSync(join(bin, first, "superseded"), ago(BUNDLE_GRACE_MS + 60_000), ago(BUNDLE_GRACE_MS + 60_000));
    utimesSync(join(bin, second, "superseded"), ago(BUNDLE_GRACE_MS - 60_000), ago(BUNDLE_GRACE_MS - 60_000));
    const third = copyOf();
    await installPlugin(bin, { bundle: true });
    const left = readdirSync(bin).filter((n) => n.startsWith("weft-cni"));
    expect(left.sort()).toEqual([second, third, copyOf()].sort());
    expect(version(file).status).toBe(0);
  }, 180_000);

  it("--bundle twice at once (two init containers): the copy the launcher names is never left stamped superseded", async () => {
    // The first to finish must not stamp the other's copy while it is being filled, a stamp that
    // would stay once that copy's launcher is written and have it removed at once 10 minutes on.
    const bin = join(dir, "concurrent");
    const cli = projectFile("dist", "src", "cli", "main.js");
    const install = () =>
      new Promise<void>((resolve, reject) =>
        execFile(process.execPath, [cli, "install-cni", "--bundle", "--bin-dir", bin], (e) =>
          e ? reject(e) : resolve(),
        ),
      );
    for (let round = 0; round < 3; round++) {
      await Promise.all([install(), install()]);
      const named = /'(weft-cni\.flannel\.[^/']+)\/node'/.exec(readFileSync(join(bin, "flannel"), "utf8"))![1]!;
      expect(existsSync(join(bin, named, "superseded")), `round ${round}`).toBe(false);
      expect(version(join(bin, "flannel")).status).toBe(0);
    }
  }, 180_000);

  it("installs overlapping within milliseconds: the cap never removes a copy as new (by its number) as the one the launcher names (another install is about to name it), nor the one the install just named; older copies whose files' times are in the future (the clock set back since) go", async () => {
    const bin = join(dir, "overlapping");
    mkdirSync(bin);
    const t = Date.now() - 60_000;
    const numbers: Record<string, number> = { o1: 8, o2: 9, c0: 10, n1: 11, n2: 11, n3: 12, n4: 13, n5: 14 };
    const copy = (c: string) => `weft-cni.flannel.${numbers[c]}.${c}abcd`;
    /** A whole copy whose node was written at `made`, stamped superseded at `stamped` if given. */
    const make = (c: string, made: number, stamped?: number) => {
      mkdirSync(join(bin, copy(c)));
      writeFileSync(join(bin, copy(c), "node"), "");
      utimesSync(join(bin, copy(c), "node"), new Date(made), new Date(made));
      if (stamped === undefined) return;
      writeFileSync(join(bin, copy(c), "superseded"), "");
      utimesSync(join(bin, copy(c), "superseded"), new Date(stamped), new Date(stamped));
    };
    const name = (c: string) =>
      writeFileSync(
        join(bin, "flannel"),
        `#!/bin/sh\nexec "$d"/'${copy(c)}/node' "$d"/'${copy(c)}/dist/src/cni/entry.js' "$@"\n`,
      );
    const left = () =>
      readdirSync(bin)
        .filter((n) => n !== "flannel")
        .sort();
    make("c0", t);
    name("c0");
    // Made before c0, but with the clock a day ahead: their files' times are no guide.
    make("o1", t + 86_400_000, t - 10_000);
    make("o2", t + 86_401_000, t - 9_000);
    // Filled a few ms after c0 by installs yet to write the launcher, and stamped by each other.
    for (const i of [1, 2, 3, 4]) make(`n${i}`, t + i, Date.now() - i * 1000);
    expect(BUNDLE_KEEP_SUPERSEDED).toBe(3);
    // Past the cap: n4, o1, o2 (the oldest stamps). Only those older than c0 go.
    await expireBundles(bin, "flannel");
    expect(left()).toEqual(["c0", "n1", "n2", "n3", "n4"].map(copy));
    // n5's install names it; n2's, whose launcher it replaced, expires after: its own copy stays,
    // though past the cap (behind n4, n3, n1); c0, stamped just now, is the oldest by number and goes.
    make("n5", t + 5);
    name("n5");
    await expireBundles(bin, "flannel", copy("n2"));
    expect(left()).toEqual(["n1", "n2", "n3", "n4", "n5"].map(copy));
    expect(existsSync(join(bin, copy("n5"), "superseded"))).toBe(false);
    // The next install's expiry: n2 is past the cap and older than n5.
    await expireBundles(bin, "flannel");
    expect(left()).toEqual(["n1", "n3", "n4", "n5"].map(copy));
  });

  it("copies superseded while the clock stepped back between installs (each stamp older than the one before): past the cap, the oldest by number goes, not the newest", async () => {
    const bin = join(dir, "clock-stepped");
    mkdirSync(bin);
    const copy = (n: number) => `weft-cni.flannel.${n}.abcdef`;
    for (const n of [1, 2, 3, 4, 5]) {
      mkdirSync(join(bin, copy(n)));
      writeFileSync(join(bin, copy(n), "node"), "");
      // Each stamped a minute earlier by the clock than the one before, all within the grace now.
      const stamped = new Date(Date.now() - n * 60_000);
      if (n < 5) writeFileSync(join(bin, copy(n), "superseded"), "");
      if (n < 5) utimesSync(join(bin, copy(n), "superseded"), stamped, stamped);
    }
    writeFileSync(
      join(bin, "flannel"),
      `#!/bin/sh\nexec "$d"/'${copy(5)}/node' "$d"/'${copy(5)}/dist/src/cni/entry.js' "$@"\n`,
    );
    await expireBundles(bin, "flannel");
    expect(readdirSync(bin).sort()).toEqual([2, 3, 4, 5].map(copy).concat("flannel").sort());
  });

  it("--bundle by several installs at once, round after round (init containers restarted together, a hand's install): they take turns, so each round leaves the launcher naming the newest copy, whole, unstamped and running, with the newest BUNDLE_KEEP_SUPERSEDED others, and every run in between works", async () => {
    // Overlapping, an install that numbered its copy first but wrote the launcher last had that
    // copy removed by a third meanwhile: its launcher then named nothing.
    const bin = join(dir, "racing");
    const cli = projectFile("dist", "src", "cli", "main.js");
    const install = () =>
      new Promise<void>((resolve, reject) =>
        execFile(process.execPath, [cli, "install-cni", "--bundle", "--bin-dir", bin], (e, _out, err) =>
          e ? reject(new Error(err)) : resolve(),
        ),
      );
    const copies = () => readdirSync(bin).filter((n) => n.startsWith("weft-cni"));
    const number = (c: string) => Number(c.split(".")[2]);
    const failures: string[] = [];
    for (let round = 0; round < 4; round++) {
      let installing = true;
      const runner = async () => {
        while (installing) {
          // Round 0's first launcher is yet to be written.
          const r = existsSync(join(bin, "flannel")) ? version(join(bin, "flannel")) : undefined;
          if (r && r.status !== 0)
            failures.push(`round ${round}: exit ${r.status}: ${r.stdout}${r.stderr}`.slice(0, 300));
          await sleep(50); // the installs' exits are seen meanwhile
        }
      };
      const running = runner();
      // Started a little apart, so that one's copying overlaps another's launcher and expiry.
      await Promise.all([0, 1, 2, 3, 4].map((i) => sleep(Math.random() * 400 * i).then(install)));
      installing = false;
      await running;
      const named = /'(weft-cni\.flannel\.[^/']+)\/node'/.exec(readFileSync(join(bin, "flannel"), "utf8"))![1]!;
      const others = copies().filter((c) => c !== named);
      expect(
        {
          whole: existsSync(join(bin, named, "node")),
          stamped: existsSync(join(bin, named, "superseded")),
          newest: others.every((c) => number(c) < number(named)),
          left: others.length,
        },
        `round ${round}: ${copies().join(" ")}`,
      ).toEqual({ whole: true, stamped: false, newest: true, left: BUNDLE_KEEP_SUPERSEDED });
      expect(version(join(bin, "flannel")).status).toBe(0);
    }
    expect(failures).toEqual([]);
  }, 300_000);

  it("refuses a --name with a dot (another name's copies would look like its own) or `weft-cni` (weft 0.1.0's bundle directory, which any name's install expires), under a code and saying what to do, writing nothing", async () => {
    const bin = join(dir, "dotted");
    for (const name of ["flannel.1", "a/b", "weft-cni"])
      await expect(installPlugin(bin, { name, bundle: true })).rejects.toMatchObject({
        code: "CNI_INSTALL_BAD_NAME",
        message: expect.stringMatching(/letters, digits, '-' and '_' only .*name it so/),
      });
    expect(existsSync(bin) ? readdirSync(bin) : []).toEqual([]);
  });

  it("a file named `weft-cni` in the bin dir (not weft 0.1.0's bundle directory, a plugin of that name), untouched for longer than the grace, is left by an install of another name", async () => {
    const bin = join(dir, "file-named-weft-cni");
    mkdirSync(bin);
    writeFileSync(join(bin, "weft-cni"), "#!/bin/sh\n", { mode: 0o755 });
    const ago = new Date(Date.now() - BUNDLE_GRACE_MS - 60_000);
    utimesSync(join(bin, "weft-cni"), ago, ago);
    await installPlugin(bin, { name: "flannel" });
    expect(readdirSync(bin).sort()).toEqual(["flannel", "weft-cni"]);
  });

  it("--bundle on a full disk: expired copies are removed before copying, a failed copy leaves nothing, and a stamp that cannot be written only warns", () => {
    // A tmpfs of 2.5 copies in a mount namespace of this test's own (gone when its process ends).
    const bin = join(dir, "small-disk");
    mkdirSync(bin);
    const size = Math.ceil(statSync(process.execPath).size * 2.5);
    const script = `
      import { execFileSync } from "node:child_process";
      import { existsSync, readdirSync, utimesSync } from "node:fs";
      import { join } from "node:path";
      import { installPlugin } from ${JSON.stringify(projectFile("dist", "src", "cni", "install.js"))};
      const bin = ${JSON.stringify(bin)};
      const copies = () => readdirSync(bin).filter((n) => n.startsWith("weft-cni")).sort();
      const named = () => /'(weft-cni[^/']+)\\/node'/.exec(execFileSync("cat", [join(bin, "flannel")], { encoding: "utf8" }))[1];
      const age = (copy) => utimesSync(join(bin, copy, "superseded"), new Date(0), new Date(0));
      const install = () => installPlugin(bin, { bundle: true }).then(() => "ok", (e) => e.code);
      const out = {};
      await install();
      const c1 = named();
      await install();
      age(c1); // superseded long ago: room for a third copy only once it is gone
      out.expiredFirst = await install();
      out.afterExpired = copies().length;
      out.full = await install(); // the copy superseded just now stays: no room
      out.afterFull = copies().length;
      out.tmp = readdirSync(bin).filter((n) => n.startsWith(".")).length;
      const before = named();
      for (const c of copies()) if (c !== before && existsSync(join(bin, c, "superseded"))) age(c);
      execFileSync("mount", ["--bind", join(bin, before), join(bin, before)]);
      execFileSync("mount", ["-o", "remount,bind,ro", join(bin, before)]);
      out.stampFailed = await install();
      out.renamed = named() !== before;
      console.log(JSON.stringify(out));
    `;
    const r = spawnSync(
      "unshare",
      [
        "--mount",
        "sh",
        "-c",
        `mount -t tmpfs -o size=${size} weft-test "$1" && exec "$2" --input-type=module -e "$3"`,
        "sh",
        bin,
        process.execPath,
        script,
      ],
      { encoding: "utf8" },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      expiredFirst: "ok",
      afterExpired: 2,
      full: "ENOSPC",
      afterFull: 2,
      tmp: 0,
      stampFailed: "ok",
      renamed: true,
    });
    expect(r.stderr).toMatch(/weft install-cni: .*weft-cni\.flannel\.\S+ stays, not marked superseded: .*read-only/);
  }, 120_000);

  it("--bundle, the bin dir then seen at another path (the init container's mount is not the host's path): VERSION answers", async () => {
    const mounted = join(dir, "container-view");
    await installPlugin(mounted, { bundle: true });
    const host = join(dir, "host-view");
    renameSync(mounted, host);
    const r = version(join(host, "flannel"));
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: "0.4.0" });
  }, 60_000);

  it("--bundle, the launcher run by a bare name in the bin dir (`sh flannel`, no slash in $0): VERSION answers", async () => {
    const bin = join(dir, "bare-name");
    await installPlugin(bin, { bundle: true });
    const r = spawnSync("/bin/sh", ["flannel"], {
      cwd: bin,
      input: '{"cniVersion":"0.4.0"}',
      env: { CNI_COMMAND: "VERSION", PATH: "/nonexistent" },
      encoding: "utf8",
    });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: "0.4.0" });
  }, 60_000);

  it("--bundle refuses a plugin module importing what the bundle lacks, under a code and saying what to do", async () => {
    // Modules as tsc leaves them: the entry imports a sibling, which imports a package.
    const src = join(dir, "foreign");
    mkdirSync(src);
    writeFileSync(join(src, "entry.js"), 'import { x } from "./helper.js";\nx();\n');
    writeFileSync(join(src, "helper.js"), 'import { pino } from "pino";\nexport const x = () => pino();\n');
    await expect(pluginModules(join(src, "entry.js"))).rejects.toMatchObject({
      code: "CNI_BUNDLE_INCOMPLETE",
      message: expect.stringMatching(
        /helper\.js imports pino, which a bundled CNI plugin does not have \(only Node\.js's own modules and zod\): install without --bundle/,
      ),
    });
  });
});
