// deploy/systemd/weft.service checked by systemd itself (`systemd-analyze verify`, Debian package
// systemd). Without systemd as PID 1 (containers, CI) verify still works when pointed at a root of
// its own: systemd's unit files, the unit, and stand-ins for the programs it names (verify only
// checks that they are executable). Any warning, such as an unknown or misspelt key, fails.
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";

function hasSystemdAnalyze(): boolean {
  try {
    execFileSync("systemd-analyze", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    if (process.env.CI === "true")
      throw new Error("systemd-analyze is missing (apt-get install systemd), and CI=true forbids skipping");
    return false;
  }
}

const UNIT = projectFile("deploy", "systemd", "weft.service");
const SYSTEMD_UNITS = ["/usr/lib/systemd/system", "/lib/systemd/system"].find(
  (d) => spawnSync("test", ["-d", d]).status === 0,
)!;

describe.skipIf(!hasSystemdAnalyze())("deploy/systemd/weft.service", () => {
  const root = mkdtempSync(join(tmpdir(), "weft-systemd-"));
  beforeAll(() => {
    mkdirSync(join(root, "etc", "systemd", "system"), { recursive: true });
    mkdirSync(join(root, "usr", "lib", "systemd"), { recursive: true });
    cpSync(SYSTEMD_UNITS, join(root, "usr", "lib", "systemd", "system"), { recursive: true, verbatimSymlinks: true });
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** Runs verify on `text` as weft.service; returns its exit status and what it printed. */
  function verify(text: string): { status: number | null; output: string } {
    for (const line of text.split("\n").filter((l) => /^Exec\w+=/.test(l))) {
      const program = line
        .slice(line.indexOf("=") + 1)
        .replace(/^[-@:+!]+/, "")
        .split(/\s+/)[0];
      mkdirSync(join(root, program, ".."), { recursive: true });
      writeFileSync(join(root, program), "#!/bin/sh\n");
      chmodSync(join(root, program), 0o755);
    }
    writeFileSync(join(root, "etc", "systemd", "system", "weft.service"), text);
    const r = spawnSync("systemd-analyze", ["verify", `--root=${root}`, "weft.service"], { encoding: "utf8" });
    return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
  }

  it("verifies cleanly", () => {
    expect(verify(readFileSync(UNIT, "utf8"))).toEqual({ status: 0, output: "" });
  });

  it("a misspelt key is reported", () => {
    const r = verify(readFileSync(UNIT, "utf8").replace("\nRestart=on-failure", "\nRestrat=on-failure"));
    expect(r.output).toMatch(/Unknown key 'Restrat' in section \[Service\]/);
  });

  it("restarts on failure, reloads by SIGHUP, stops by SIGTERM, keeps state in /var/lib/weft and config in /etc/weft", () => {
    const text = readFileSync(UNIT, "utf8");
    const keys = (k: string) => [...text.matchAll(new RegExp(`^${k}=(.*)$`, "gm"))].map((m) => m[1]);
    expect(keys("Restart")).toEqual(["on-failure"]);
    expect(keys("ExecReload")).toEqual(["/bin/kill -HUP $MAINPID"]);
    expect(keys("KillSignal")).toEqual(["SIGTERM"]);
    expect(keys("StateDirectory")).toEqual(["weft"]);
    expect(keys("ConfigurationDirectory")).toEqual(["weft"]);
    // Not hidden (yes, tmpfs): `npm install -g .` of a checkout under /root or /home links weft
    // there, and a unit that cannot see it fails to exec (203/EXEC), restarting for ever.
    expect(keys("ProtectHome")).toEqual(["read-only"]);
    // Settings as variables that weft.env (read after them) overrides; a flag would win over it.
    expect(keys("ExecStart")).toEqual(["/usr/local/bin/weft agent"]);
    const env = keys("Environment").flatMap((l) => l.split(/\s+/));
    expect(env).toEqual(
      expect.arrayContaining([
        "WEFT_NET_CONFIG=/etc/weft/net-conf.json",
        "WEFT_STATE_DIR=/var/lib/weft",
        "WEFT_KEY_FILE=/etc/weft/cluster.key",
        "WEFT_IP_MASQ=true",
      ]),
    );
    expect(keys("EnvironmentFile")).toEqual(["-/etc/weft/weft.env"]);
    expect(text.indexOf("\nEnvironmentFile=")).toBeGreaterThan(text.lastIndexOf("\nEnvironment="));
    expect(keys("CapabilityBoundingSet")[0].split(" ")).toEqual(expect.arrayContaining(["CAP_NET_ADMIN", "CAP_BPF"]));
    expect(text).toMatch(/--keep-on-exit/);
  });
});

// npm's global prefix is not always /usr/local (NodeSource's Node.js has /usr), and the unit runs
// one path: each `npm install -g` the README's systemd steps and the unit's own comment give names
// ExecStart's prefix (before, neither gave --prefix, and the unit failed to exec on such a host).
describe("the systemd install steps", () => {
  it("install weft where the unit's ExecStart runs it", () => {
    const unit = readFileSync(UNIT, "utf8");
    const prefix = dirname(dirname(unit.match(/^ExecStart=(\S+)/m)![1]));
    const readme = readFileSync(projectFile("README.md"), "utf8");
    const steps = readme.slice(
      readme.indexOf("### systemd hosts"),
      readme.indexOf("\n## ", readme.indexOf("### systemd hosts")),
    );
    // The comment's lines joined, so that a command wrapped over two reads as one.
    for (const text of [steps, unit.replace(/\n# /g, " ")]) {
      const installs = [...text.matchAll(/`npm install -g\b[^`]*`/g)].map((m) => m[0]);
      expect(installs.length).toBeGreaterThan(0);
      for (const install of installs) expect(install).toMatch(new RegExp(` --prefix ${prefix}(?![\\w/])`));
    }
  });
});
