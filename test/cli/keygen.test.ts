// `weft keygen`, the first step on a fresh host: its directory (/etc/weft) may not exist yet, as
// systemd makes it only at the unit's first start; the key file is written once, owner-only, and
// a second keygen onto it says so under its own code (before, Node's raw EEXIST). --check reads a
// key file as the agent would, to be run before an upgrade.
import { execFile } from "node:child_process";
import {
  chmodSync,
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
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { generateKey, KEY_BYTES, Keyring } from "../../src/control/gossip/keyring.js";
import { atomicTempPath, writeFileAtomic } from "../../src/fs/atomic-write.js";
import { projectFile } from "../../src/paths.js";

const run = promisify(execFile);
const weft = (...args: string[]) => run(process.execPath, [projectFile("dist", "src", "cli", "main.js"), ...args]);
/** Another key, as keygen writes it. */
const generateKeyText = () => Buffer.from(generateKey()).toString("base64");
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

describe("weft keygen, shared or limited filesystems", () => {
  // In a dir others may write (/tmp), a file another user made ahead at the temp name that the
  // write used to take (`.<name>.<pid>.tmp`, opened without O_EXCL) became the key file, theirs.
  it("does not write the key into a temp file another user made ahead", async () => {
    const shared = join(dir, "shared");
    mkdirSync(shared);
    chmodSync(dir, 0o711); // for the other user to reach it
    chmodSync(shared, 0o1777);
    const key = join(shared, "cluster.key");
    const ahead = atomicTempPath(key);
    const made = await run("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "sh",
      "-c",
      `umask 0 && : > ${ahead}`,
    ]);
    expect(made.stderr).toBe("");
    await writeFileAtomic(key, "secret\n", { mode: 0o600, dirMode: 0o700, exclusive: true });
    expect(statSync(key).uid).toBe(process.getuid!());
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(readFileSync(key, "utf8")).toBe("secret\n");
    expect(readFileSync(ahead, "utf8")).toBe("");
    expect(readdirSync(shared).sort()).toEqual([`.cluster.key.${process.pid}.tmp`, "cluster.key"]);
  });

  // vfat, exFAT and some FUSE filesystems have no hard links: link(2) fails (here made to fail by
  // strace's fault injection, as such a filesystem's does), and the key is written in place.
  it("writes the key where the filesystem has no hard links, still never over a file", async () => {
    const key = join(dir, "nolinks", "cluster.key");
    const noLinks = (...args: string[]) =>
      run("strace", [
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=link,linkat",
        "-e",
        "inject=link,linkat:error=EPERM",
        process.execPath,
        projectFile("dist", "src", "cli", "main.js"),
        ...args,
      ]);
    expect((await noLinks("keygen", key)).stdout).toBe(`wrote ${key}\n`);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(Buffer.from(readFileSync(key, "utf8").trim(), "base64")).toHaveLength(KEY_BYTES);
    expect(readdirSync(join(dir, "nolinks"))).toEqual(["cluster.key"]);
    const before = readFileSync(key, "utf8");
    await expect(noLinks("keygen", key)).rejects.toMatchObject({
      stderr: expect.stringContaining("[CLI_KEY_FILE_EXISTS]"),
    });
    expect(readFileSync(key, "utf8")).toBe(before);
  });
});

describe("weft keygen --check", () => {
  // What to run before an upgrade: the agent refuses a line that older agents loaded in part
  // (since 4b0593a), and --check reads the file as the agent does, writing nothing.
  it("passes keygen's own file and one key a line; refuses a commented key and two keys on a line, as the agent does", async () => {
    const good = join(dir, "check", "good.key");
    await weft("keygen", good);
    const key = readFileSync(good, "utf8").trim();
    // Ids as the agent's keyring gives them (its AGENT_KEYS_RELOADED logs name the same).
    const id = (k: string) => new Keyring(Buffer.from(k, "base64")).ids().primary;
    expect((await weft("keygen", "--check", good)).stdout).toBe(
      `${good}: 1 key (ids ${id(key)}; ${id(key)} seals), as this weft reads it\n`,
    );
    const file = (name: string, text: string) => {
      const path = join(dir, "check", name);
      writeFileSync(path, text, { mode: 0o600 });
      return path;
    };
    const other = generateKeyText();
    const two = file("two.key", `# primary first\n${key}\n${other}\n`);
    expect((await weft("keygen", "--check", two)).stdout).toBe(
      `${two}: 2 keys (ids ${id(key)}, ${id(other)}; ${id(key)} seals), as this weft reads it\n`,
    );
    // A key listed twice is one key to the agent.
    const twice = file("twice.key", `${key}\n${other}\n${key}\n`);
    expect((await weft("keygen", "--check", twice)).stdout).toBe(
      `${twice}: 2 keys (ids ${id(key)}, ${id(other)}; ${id(key)} seals), as this weft reads it\n`,
    );
    for (const [name, text, line] of [
      ["comment.key", `${key} # the cluster key\n`, 1],
      ["space.key", `${key} ${generateKeyText()}\n`, 1],
      ["comma.key", `# rotation\n${key},${generateKeyText()}\n`, 2],
    ] as const) {
      const path = file(name, text);
      await expect(weft("keygen", "--check", path), name).rejects.toMatchObject({
        code: 1,
        stderr: expect.stringMatching(
          new RegExp(`^weft: \\[GOSSIP_KEY_FILE_INVALID\\] key file ${path}: line ${line} holds more than one word`),
        ),
      });
      expect(readFileSync(path, "utf8")).toBe(text);
    }
  });
});
