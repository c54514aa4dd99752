// deploy/Containerfile's build, run as a container engine would run it: no engine runs on this
// machine, and no registry is reachable for the base image, so the steps run here instead, taken
// from the Containerfile's own lines. The build stage's COPY lines copy from the repository (less
// what .dockerignore leaves out of the build context) into a temp dir standing for its WORKDIR,
// and its RUN lines run there, with the build arguments its ARG lines name (WEFT_COMMIT: this
// checkout's HEAD, as README's build command gives it), but for npm's installs: `npm ci` links this checkout's
// node_modules (the lock file's install, without a registry) and runs the package's install and
// prepare scripts unless --ignore-scripts, as npm ci does; `npm prune --omit=dev` leaves the
// final stage only the production packages (those the lock file does not mark dev). apt-get lines install the
// compilers this machine already has. Then the final stage's `COPY --from=build` lines assemble
// its WORKDIR, and what the image runs is run there: its CMD's command, the init container's
// `weft install-cni --bundle` with the plugin it installs, the addon and the Wasm module.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, posix, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";
import { checkoutHead } from "../support/checkout.js";

interface Stage {
  workdir: string;
  /** [sources, destination] of each COPY, as written. */
  copies: [string[], string][];
  runs: string[];
  cmd: string[];
  /** Names of its ARG lines: build arguments its RUN lines see in their environment. */
  args: string[];
}

/** The Containerfile's stages: continuation lines joined, comments dropped. */
function stages(text: string): Stage[] {
  const out: Stage[] = [];
  for (const line of text.replace(/\\\n/g, " ").split("\n")) {
    if (!line.trim() || line.trim().startsWith("#")) continue;
    const [, op, rest] = /^([A-Z]+)\s+(.*)$/.exec(line.trim()) ?? [];
    if (!op) throw new Error(`Containerfile: not an instruction: ${line}`);
    const stage = out.at(-1);
    if (op === "FROM") out.push({ workdir: "/", copies: [], runs: [], cmd: [], args: [] });
    else if (!stage) throw new Error(`${op} before FROM`);
    else if (op === "WORKDIR") stage.workdir = posix.resolve(stage.workdir, rest);
    else if (op === "RUN") stage.runs.push(rest.trim());
    else if (op === "ARG" && /^\w+$/.test(rest.trim())) stage.args.push(rest.trim());
    else if (op === "CMD") stage.cmd = JSON.parse(rest);
    else if (op === "COPY") {
      const words = rest.trim().split(/\s+/);
      stage.copies.push([words.slice(0, -1), words.at(-1)!]);
    } else if (op !== "ENTRYPOINT" || rest.trim() !== "[]")
      throw new Error(`Containerfile: ${op} is new to this test; teach it what the build does with it`);
  }
  return out;
}

/** Where COPY puts `source`: into `dest` if it names a directory (a trailing / or several sources), else at `dest`. */
function target(workdir: string, dest: string, source: string, sources: number): string {
  const to = posix.resolve(workdir, dest);
  return dest.endsWith("/") || sources > 1 ? posix.join(to, basename(source)) : to;
}

function sh(cwd: string, command: string, env: Record<string, string> = {}): void {
  const r = spawnSync("sh", ["-c", command], {
    cwd,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.status !== 0)
    throw new Error(`\`${command}\` exited ${r.status ?? r.signal}:\n${`${r.stdout}${r.stderr}`.slice(-3000)}`);
}

/**
 * Runs the build stage in `dir` (its WORKDIR), given `buildArgs` (--build-arg: those its ARG lines
 * name reach its RUN lines); returns whether node_modules was pruned to production packages.
 */
function build(stage: Stage, dir: string, buildArgs: Record<string, string>): boolean {
  const env = Object.fromEntries(stage.args.filter((a) => a in buildArgs).map((a) => [a, buildArgs[a]]));
  const ignored = readFileSync(projectFile(".dockerignore"), "utf8")
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"));
  // Only plain paths, which this test matches exactly; a pattern would need Docker's matcher.
  expect(ignored.filter((p) => /[*?[!]/.test(p))).toEqual([]);
  for (const [sources, dest] of stage.copies)
    for (const s of sources)
      cpSync(projectFile(s), join(dir, relative(stage.workdir, target(stage.workdir, dest, s, sources.length))), {
        recursive: true,
        filter: (from) => !ignored.includes(relative(projectFile(), from)),
      });
  let pruned = false;
  for (const run of stage.runs) {
    if (run.startsWith("apt-get ")) continue;
    for (const command of run.split("&&").map((c) => c.trim())) {
      if (/^npm ci( --ignore-scripts)?$/.test(command)) {
        symlinkSync(projectFile("node_modules"), join(dir, "node_modules"));
        const scripts = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).scripts ?? {};
        if (!command.includes("--ignore-scripts"))
          for (const s of ["preinstall", "install", "postinstall", "prepare"])
            if (scripts[s]) sh(dir, `npm run ${s}`, env);
      } else if (command === "npm prune --omit=dev") pruned = true;
      // Anything else that installs would write into this checkout's node_modules.
      else if (/^(npm run|npx) /.test(command)) sh(dir, command, env);
      else throw new Error(`Containerfile: \`${command}\` is new to this test; teach it what the build does with it`);
    }
  }
  return pruned;
}

/** node_modules of the production packages only (the lock file's not marked dev), each a link to this checkout's. */
function productionModules(buildDir: string, to: string): void {
  const lock = JSON.parse(readFileSync(join(buildDir, "package-lock.json"), "utf8"));
  const names = Object.entries(lock.packages as Record<string, { dev?: boolean }>)
    .filter(([path, p]) => !p.dev && /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path))
    .map(([path]) => path.slice("node_modules/".length));
  expect(names).toContain("zod");
  for (const name of names) {
    mkdirSync(dirname(join(to, name)), { recursive: true });
    symlinkSync(projectFile("node_modules", name), join(to, name));
  }
}

/** Assembles the final stage's WORKDIR in `dir` from the build stage's `buildDir`; returns the sources missing there. */
function assemble(stage: Stage, buildWorkdir: string, buildDir: string, pruned: boolean, dir: string): string[] {
  const missing: string[] = [];
  for (const [sources, dest] of stage.copies) {
    const from = sources.find((s) => s.startsWith("--from="));
    expect(from, `COPY ${sources.join(" ")}: only --from=build is known here`).toBe("--from=build");
    const paths = sources.filter((s) => s !== from);
    for (const s of paths) {
      const source = join(buildDir, relative(buildWorkdir, s));
      const to = join(dir, relative(stage.workdir, target(stage.workdir, dest, s, paths.length)));
      if (!existsSync(source)) missing.push(s);
      else if (basename(s) === "node_modules" && pruned) productionModules(buildDir, to);
      else cpSync(source, to, { recursive: true });
    }
  }
  return missing;
}

function node(cwd: string, args: string[], env: Record<string, string> = {}, input = ""): string {
  const r = spawnSync(process.execPath, args, { cwd, env: { ...process.env, ...env }, input, encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return r.stdout;
}

/**
 * Node.js LTS lines still given security fixes when the image last moved (nodejs.org/en/about/previous-releases):
 * 22 until 2027-04-30, 24 until 2028-04-30. Not compared with today's date, so that CI does not turn red without a
 * change; moving the image (or this list) is a release chore.
 */
const NODE_SUPPORTED_LTS = new Set([22, 24]);

describe("deploy/Containerfile", () => {
  const root = mkdtempSync(join(tmpdir(), "weft-image-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("bases both stages on one supported Node.js LTS image, on Debian bookworm (its glibc 2.36 runs the bundled Node.js; nodes need 2.28)", () => {
    const from = [...readFileSync(projectFile("deploy", "Containerfile"), "utf8").matchAll(/^FROM (\S+)/gm)].map(
      (m) => m[1],
    );
    expect(new Set(from).size, from.join(", ")).toBe(1);
    const [, major] = /^docker\.io\/library\/node:(\d+)-bookworm-slim$/.exec(from[0]) ?? [];
    expect(major, `${from[0]}: not node:<major>-bookworm-slim`).toBeDefined();
    expect(
      NODE_SUPPORTED_LTS.has(Number(major)),
      `Node.js ${major}: not a supported LTS line (20 ended 2026-04-30)`,
    ).toBe(true);
  });

  it("builds: the build stage's steps succeed and make every file the final stage copies, which then runs", () => {
    const [buildStage, final, ...more] = stages(readFileSync(projectFile("deploy", "Containerfile"), "utf8"));
    expect(more).toEqual([]);
    const buildDir = join(root, "build");
    const imageDir = join(root, "image");
    mkdirSync(buildDir);
    // As README's build command gives it: the commit the image is built from.
    const commit = checkoutHead();
    const pruned = build(buildStage, buildDir, { WEFT_COMMIT: commit });
    expect(assemble(final, buildStage.workdir, buildDir, pruned, imageDir)).toEqual([]);

    // CMD runs `weft`, a link to the CLI that a RUN line makes.
    const [program, ...args] = final.cmd;
    const link = final.runs.join("\n").match(new RegExp(`ln -s (\\S+) /usr/local/bin/${program}\\b`));
    expect(link, `no RUN line links /usr/local/bin/${program}`).not.toBeNull();
    const cli = relative(final.workdir, link![1]);
    expect(readFileSync(join(imageDir, cli), "utf8")).toMatch(/^#!\/usr\/bin\/env node\n/);
    expect(node(imageDir, [cli, ...args, "--help"])).toContain(`Usage: weft ${args.join(" ")}`);
    // The build context has no .git: the commit shown is WEFT_COMMIT's (before, no build told its commit).
    expect(node(imageDir, [cli, "--version"]).trim()).toMatch(new RegExp(`^\\S+ \\(${commit}\\)$`));

    // What deploy/kubernetes/weft.yaml's init container runs, and the plugin it installs.
    const binDir = join(root, "cni-bin");
    node(imageDir, [cli, "install-cni", "--bin-dir", binDir, "--bundle"]);
    const version = spawnSync(join(binDir, "flannel"), {
      env: { ...process.env, CNI_COMMAND: "VERSION" },
      input: JSON.stringify({ cniVersion: "1.0.0" }),
      encoding: "utf8",
    });
    expect(version.status).toBe(0);
    expect(JSON.parse(version.stdout).supportedVersions).toContain("1.0.0");

    // The native addon and the Wasm module load from where the image has them.
    const loaded = node(imageDir, [
      "--input-type=module",
      "-e",
      `const { native } = await import("./dist/src/io/native.js");
       const { HotPath, createHotPathMemory } = await import("./dist/src/hotpath/module.js");
       const hot = new HotPath(createHotPathMemory());
       console.log(native.MAX_BATCH > 0, hot.verdictNames().includes("FORWARD"));`,
    ]);
    expect(loaded.trim()).toBe("true true");
  }, 180_000);
});
