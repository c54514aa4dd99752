// What `npm pack` puts in the package (package.json's "files"): what `npm install -g` installs from
// its tarball, or from a checkout with --install-links. Without the list npm leaves out what
// .gitignore names, the Wasm module among it, and the installed agent fails at its first start
// (HOTPATH_NOT_BUILT); the addon is built by the install script on the installing host, so its
// sources must be there and a build of this host's must not.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";

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
        "dist/src/cni/entry.js",
        "dist/src/dataplane/worker.js",
        "build/weft.wasm",
        "native/binding.gyp",
        ...readdirSync(projectFile("native", "src")).map((f) => `native/src/${f}`),
        "deploy/systemd/weft.service",
        "deploy/kubernetes/weft.yaml",
        "README.md",
      ]),
    );
    // Not this host's addon (the install script builds the installing host's), nor what only a
    // checkout runs.
    expect(files.filter((f) => /^(native\/build|node_modules|test|dist\/test|bench)\//.test(f))).toEqual([]);
  }, 60_000);
});
