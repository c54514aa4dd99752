// `weft --version` tells builds apart: package.json's version is every build's, so the commit the
// build recorded in dist/build-info.json follows it. The tests' build is made in this checkout; a
// package built outside one (an image's build context has no .git) records "unknown" or the
// WEFT_COMMIT it is given, never the commit of a repository it happens to sit in.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";
import { headLabel } from "../support/checkout.js";

const VERSION = JSON.parse(readFileSync(projectFile("package.json"), "utf8")).version;
const node = (cwd: string, args: string[], env: Record<string, string> = {}) =>
  execFileSync(process.execPath, args, { cwd, encoding: "utf8", env: { ...process.env, ...env } }).trim();

describe("weft --version", () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-version-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("prints the version and the commit of this checkout the build was made from", () => {
    const out = node(projectFile(), [projectFile("dist", "src", "cli", "main.js"), "--version"]);
    const [, version, commit] = /^(\S+) \((\S+)\)$/.exec(out) ?? [];
    expect(version, out).toBe(VERSION);
    expect(commit, out).toMatch(headLabel());
  });

  it("a build inside another git repository, without its own .git, records unknown or the WEFT_COMMIT given", () => {
    const outer = join(dir, "outer");
    mkdirSync(outer);
    const git = (...args: string[]) => execFileSync("git", args, { cwd: outer, encoding: "utf8" }).trim();
    git("init", "-q");
    writeFileSync(join(outer, "file"), "x\n");
    git("add", "file");
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "outer");
    const outerCommit = git("rev-parse", "HEAD");
    // As npm installs a package into a project: node_modules/weft, its dependencies beside it.
    const pkg = join(outer, "node_modules", "weft");
    mkdirSync(join(pkg, "dist"), { recursive: true });
    cpSync(projectFile("package.json"), join(pkg, "package.json"));
    cpSync(projectFile("dist", "src"), join(pkg, "dist", "src"), { recursive: true });
    for (const built of ["node_modules", "native"]) symlinkSync(projectFile(built), join(pkg, built));
    const main = join(pkg, "dist", "src", "cli", "main.js");
    const record = join(pkg, "dist", "src", "record-build.js");

    node(pkg, [record]);
    expect(node(pkg, [main, "--version"])).toBe(`${VERSION} (unknown)`);
    expect(node(pkg, [main, "--version"])).not.toContain(outerCommit);
    const given = "0123456789abcdef0123456789abcdef01234567";
    node(pkg, [record], { WEFT_COMMIT: `${given}-dirty` });
    expect(node(pkg, [main, "--version"])).toBe(`${VERSION} (${given}-dirty)`);
  });
});
