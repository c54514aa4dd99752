// `weft keygen`, the first step on a fresh host: its directory (/etc/weft) may not exist yet, as
// systemd makes it only at the unit's first start; the key file is written once, owner-only, and
// a second keygen onto it says so under its own code (before, Node's raw EEXIST).
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { KEY_BYTES } from "../../src/control/gossip/keyring.js";
import { projectFile } from "../../src/paths.js";

const run = promisify(execFile);
const weft = (...args: string[]) => run(process.execPath, [projectFile("dist", "src", "cli", "main.js"), ...args]);
const dir = mkdtempSync(join(tmpdir(), "weft-keygen-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("weft keygen", () => {
  it("makes the missing directory (owner-only), writes a 0600 key once and refuses to overwrite it", async () => {
    const key = join(dir, "etc", "weft", "cluster.key");
    expect((await weft("keygen", key)).stdout).toBe(`wrote ${key}\n`);
    expect(statSync(join(dir, "etc", "weft")).mode & 0o777).toBe(0o700);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(Buffer.from(readFileSync(key, "utf8").trim(), "base64")).toHaveLength(KEY_BYTES);
    const before = readFileSync(key, "utf8");
    await expect(weft("keygen", key)).rejects.toMatchObject({
      code: 1,
      stderr: `weft: [CLI_KEY_FILE_EXISTS] ${key} exists; weft keygen never overwrites a file (it may be a running cluster's key): give another path, or remove it first if no cluster uses it\n`,
    });
    expect(readFileSync(key, "utf8")).toBe(before);
  });
});

describe("weft keygen, cut short", () => {
  // A file size limit cuts the write as a full disk would: no key file is left, so keygen runs again.
  it("leaves no key where its write failed", async () => {
    const key = join(dir, "cut", "cluster.key");
    await expect(
      run("prlimit", [
        "--fsize=20",
        "--",
        process.execPath,
        projectFile("dist", "src", "cli", "main.js"),
        "keygen",
        key,
      ]),
    ).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining("[CLI_KEY_FILE_UNWRITABLE]") });
    expect(existsSync(key)).toBe(false);
    await weft("keygen", key);
    expect(Buffer.from(readFileSync(key, "utf8").trim(), "base64")).toHaveLength(KEY_BYTES);
  });
});
