// `weft install-cni`: the launcher runtimes find under the type name, and the bundle for hosts
// without Node.js (Node.js and the plugin's files copied beside it), run as a runtime would with
// no Node.js on PATH.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { installPlugin } from "../../src/cni/install.js";

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
      supportedVersions: ["0.3.1", "0.4.0", "1.0.0"],
    });
  });

  it("--bundle: runs from its own copy of Node.js and files, nothing of this checkout", async () => {
    const file = await installPlugin(dir, { bundle: true });
    expect(readFileSync(file, "utf8")).toContain(
      `'${join(dir, "weft-cni", "node")}' '${join(dir, "weft-cni", "dist", "src", "cni", "main.js")}'`,
    );
    const r = version(file);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).supportedVersions).toEqual(["0.3.1", "0.4.0", "1.0.0"]);
    // A config error still comes back as CNI error JSON, so zod and the plugin's modules are all there.
    const bad = spawnSync(file, [], {
      input: "{}",
      env: { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c", CNI_IFNAME: "eth0", CNI_PATH: "/x", CNI_NETNS: "/x" },
      encoding: "utf8",
    });
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({
      code: 7,
      msg: expect.stringMatching(/^invalid network config: cniVersion/),
    });
  }, 60_000);
});
