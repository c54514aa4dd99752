// What `npm pack` puts in the package (package.json's "files"): what `npm install -g` installs from
// its tarball, or from a checkout with --install-links. Without the list npm leaves out what
// .gitignore names, the Wasm module among it, and the installed agent fails at its first start
// (HOTPATH_NOT_BUILT); the addon is built by the install script on the installing host, so its
// sources must be there and a build of this host's must not. Then the tarball installed as README
// says, under a prefix of its own instead of /usr/local (a tarball has no lockfile, so npm may
// fetch the registry's metadata for its dependencies, as a user's install does), and used as a
// user does.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";
import { headLabel } from "../support/checkout.js";
import { leftovers, runCli } from "../support/cli-run.js";
import { canUseNetns } from "../support/netns.js";

describe("the npm package", () => {
  it("holds what the installed agent runs: the built CLI and modules it starts by path, the Wasm module, the addon's sources, the deploy files", () => {
    const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: projectFile(),
      encoding: "utf8",
    });
    expect(r.status, r.stderr).toBe(0);
    const files: string[] = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path);
    expect(files).toEqual(
      expect.arrayContaining([
        "dist/src/cli/main.js",
        "dist/build-info.json", // the commit `weft --version` shows: the package has no .git
        "dist/build-id.json", // the build id and Wasm hash that keep an install under a running agent from mixing builds
        "dist/src/cni/entry.js",
        "dist/src/dataplane/worker.js",
        "dist/bench/micro/run.js",
        "build/weft.wasm",
        "native/binding.gyp",
        ...readdirSync(projectFile("native", "src")).map((f) => `native/src/${f}`),
        "deploy/systemd/weft.service",
        "deploy/kubernetes/weft.yaml",
        "README.md",
      ]),
    );
    // Not this host's addon (the install script builds the installing host's), nor what only a
    // checkout runs (of test/, only the references and rig the microbenchmarks measure with).
    expect(
      files.filter(
        (f) =>
          /^(native\/build|node_modules|test|bench)\//.test(f) ||
          /^dist\/test\/(?!reference\/|support\/(hotpath|offload)\.js)/.test(f),
      ),
    ).toEqual([]);
  }, 60_000);
});

describe("the packed package, installed with npm install -g", () => {
  // Made in beforeAll, so that a run which filters these tests out leaves no directory behind.
  let work = "";
  let prefix = "";
  let root = "";
  let weft = "";
  // The installed bin runs by its `#!/usr/bin/env node`, as from a shell.
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
  const run = (file: string, args: string[]) => spawnSync(file, args, { cwd: work, encoding: "utf8", env });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "weft-package-test-"));
    prefix = join(work, "prefix");
    root = join(prefix, "lib", "node_modules", "weft");
    weft = join(prefix, "bin", "weft");
    // dist/ and build/ are the global setup's build: packing without prepare packs them as they are.
    const pack = spawnSync("npm", ["pack", "--ignore-scripts", "--silent", "--pack-destination", work], {
      cwd: projectFile(),
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(pack.status, `${pack.error ?? ""} ${pack.stderr}`).toBe(0);
    const tarball = join(work, pack.stdout.trim().split("\n").at(-1)!);
    const install = spawnSync(
      "npm",
      ["install", "-g", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", tarball],
      // spawnSync blocks the worker: vitest's hook timeout cannot end a hung npm, this does.
      { cwd: work, encoding: "utf8", timeout: 220_000 },
    );
    expect(install.status, `${install.error ?? ""} ${install.stdout}${install.stderr}`).toBe(0);
  }, 240_000); // the addon compiles in about 15 s on a quiet 2-core machine, minutes on a loaded one

  it("weft as npm links it: --help lists the commands, --version the package's and the commit the packed build recorded", () => {
    const help = run(weft, ["--help"]);
    expect(help.status, help.stderr).toBe(0);
    for (const command of ["agent", "keygen", "status", "install-cni", "bench", "demo"])
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
    // The installed package has no .git: the commit is the one the build recorded in this checkout.
    const [, version, commit] = /^(\S+) \((\S+)\)$/.exec(run(weft, ["--version"]).stdout.trim()) ?? [];
    expect(version).toBe(JSON.parse(readFileSync(projectFile("package.json"), "utf8")).version);
    expect(commit).toMatch(headLabel());
  });

  it("the install script built the addon on this host", () => {
    expect(existsSync(join(root, "native", "build", "Release", "weft_io.node"))).toBe(true);
  });

  it.runIf(canUseNetns())(
    "weft demo --once runs on wasm-vxlan (Wasm module, addon, workers, CNI plugin) and leaves nothing",
    async () => {
      const r = await runCli(
        work,
        "demo",
        ["demo", "--once"],
        undefined,
        {},
        join(root, "dist", "src", "cli", "main.js"),
      );
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain("every host reaches every other host's pods");
      expect(leftovers(r)).toEqual([]);
    },
    120_000,
  );

  it("README's systemd steps: weft keygen makes /etc/weft and the key; the unit's ExecStart is the installed weft", () => {
    const key = join(work, "etc", "weft", "cluster.key");
    const keygen = run(weft, ["keygen", key]);
    expect(keygen.status, keygen.stderr).toBe(0);
    expect(statSync(dirname(key)).mode & 0o777).toBe(0o700);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(Buffer.from(readFileSync(key, "utf8").trim(), "base64")).toHaveLength(32);
    const unit = readFileSync(join(root, "deploy", "systemd", "weft.service"), "utf8");
    const [exec, ...args] = unit.match(/^ExecStart=(.*)$/m)![1].split(" ");
    expect(exec).toBe("/usr/local/bin/weft"); // README's --prefix /usr/local: here `prefix` stands for it
    const agent = run(weft, [...args, "--help"]);
    expect(agent.status, agent.stderr).toBe(0);
    expect(agent.stdout).toContain("--key-file");
  });

  it("weft install-cni --bundle: the plugin it puts in place answers CNI's VERSION without Node.js on the PATH", () => {
    const bin = join(work, "cni-bin");
    const install = run(weft, ["install-cni", "--bundle", "--bin-dir", bin]);
    expect(install.status, install.stderr).toBe(0);
    const version = spawnSync(join(bin, "flannel"), [], {
      encoding: "utf8",
      env: { CNI_COMMAND: "VERSION", PATH: "/nonexistent" },
      input: "{}",
    });
    expect(version.status, version.stdout + version.stderr).toBe(0);
    expect(JSON.parse(version.stdout).supportedVersions).toContain("1.0.0");
  }, 60_000);

  it("weft bench's microbenchmarks load: every module the runner imports is installed", () => {
    // What `weft bench` runs last (src/bench/micro.ts); --help only once all its imports resolved.
    const micro = run(process.execPath, [join(root, "dist", "bench", "micro", "run.js"), "--help"]);
    expect(micro.status, micro.stderr).toBe(0);
    expect(micro.stdout).toContain("--max-time");
  });
});
