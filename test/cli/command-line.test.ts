// The `weft` command line as a user types it: a flag commander refuses (missing, unknown) gets
// weft's one `weft: [CODE]` line like any other error (before, commander's bare "error: ..."),
// help and --version still exit 0; an empty WEFT_<FLAG> is unset, as flanneld takes an empty
// FLANNELD_<FLAG> (before, WEFT_IP_MASQ= was CLI_BAD_BOOLEAN). The agent runs stop at the missing
// net-conf.json, its first read: nothing is leased, bound or touched.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";

const dir = mkdtempSync(join(tmpdir(), "weft-command-line-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const missing = join(dir, "missing.json");

/** `weft args` with `env` over this environment, its WEFT_ and FLANNELD_ variables left out. */
const weft = (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const own = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(WEFT|FLANNELD)_/.test(k)));
  return spawnSync(process.execPath, [projectFile("dist", "src", "cli", "main.js"), ...args], {
    encoding: "utf8",
    env: { ...own, ...env },
    timeout: 30_000,
  });
};
/** The net-conf.json that is not there: the run got past its flags. */
const unreadable = `weft: [CONFIG_NET_CONF_UNREADABLE] cannot read the network config ${missing}: ENOENT: no such file or directory, open '${missing}'; pass --net-config PATH\n`;

describe("weft's command line", () => {
  it("gives commander's refusals a code and what to do, on one line, exit 1", () => {
    for (const [args, line] of [
      [
        ["agent"],
        "weft: [CLI_MISSING_OPTION] required option '--key-file <path>' not specified: give it, or its variable (`weft agent --help` names both)",
      ],
      [
        ["agent", "--key-file", "k", "--bogus"],
        "weft: [CLI_UNKNOWN_OPTION] unknown option '--bogus': `weft agent --help` lists the flags it takes",
      ],
      // Not hidden behind the mandatory flag it mistypes (commander checks that one first).
      [
        ["agent", "--key-fil", "k"],
        "weft: [CLI_UNKNOWN_OPTION] unknown option '--key-fil' (Did you mean --key-file?): `weft agent --help` lists the flags it takes",
      ],
      [
        ["status", "--state-di", "x"],
        "weft: [CLI_UNKNOWN_OPTION] unknown option '--state-di' (Did you mean --state-dir?): `weft status --help` lists the flags it takes",
      ],
      [
        ["agent", "--key-file", "k", "--iface"],
        "weft: [CLI_MISSING_ARGUMENT] option '--iface <name|ip...>' argument missing: give the flag its value (`weft agent --help` says what it takes)",
      ],
      [
        ["keygen"],
        "weft: [CLI_MISSING_ARGUMENT] missing required argument 'path': give it (`weft keygen --help` says what it is)",
      ],
      [
        ["keygen", "a", "b"],
        "weft: [CLI_EXCESS_ARGUMENTS] too many arguments for 'keygen'. Expected 1 argument but got 2: drop the extra ones, or quote a value holding spaces (`weft keygen --help` shows what it takes)",
      ],
      [["nope"], "weft: [CLI_UNKNOWN_COMMAND] unknown command 'nope': `weft --help` lists the commands"],
      [
        ["demo", "--backend", "geneve"],
        "weft: [CLI_BAD_CHOICE] option '--backend <type>' argument 'geneve' is invalid. Allowed choices are vxlan, host-gw, udp, wasm-vxlan: give one of those",
      ],
    ] as const) {
      const r = weft([...args]);
      expect([r.status, r.stdout, r.stderr]).toEqual([1, "", `${line}\n`]);
    }
  });

  it("keeps commander's own order, not a crash, with a commander whose internals it calls are renamed", () => {
    // A commander minor release renaming them, as a preload rewrites commander's source as it loads.
    const renamed = join(dir, "renamed-commander.cjs");
    writeFileSync(
      renamed,
      `const M = require("node:module");
const compile = M.prototype._compile;
M.prototype._compile = function (src, file) {
  if (/commander[\\/]lib[\\/]command\\.js$/.test(file))
    src = src.replaceAll("_outputHelpIfRequested", "_outputHelpIfAsked").replaceAll("unknownOption(", "unknownFlag(");
  return compile.call(this, src, file);
};`,
    );
    const r = weft(["agent", "--key-fil", "k"], { NODE_OPTIONS: `--require ${renamed}` });
    expect([r.status, r.stdout, r.stderr]).toEqual([
      1,
      "",
      "weft: [CLI_MISSING_OPTION] required option '--key-file <path>' not specified: give it, or its variable (`weft agent --help` names both)\n",
    ]);
    // Its unknown flags are still refused, help still asked for first.
    expect(weft(["agent", "--key-file", "k", "--bogus"], { NODE_OPTIONS: `--require ${renamed}` }).stderr).toMatch(
      /^weft: \[CLI_UNKNOWN_OPTION\] unknown option '--bogus'/,
    );
    expect(weft(["agent", "--key-fil", "k", "--help"], { NODE_OPTIONS: `--require ${renamed}` }).status).toBe(0);
  });

  it("prints help and versions on stdout with exit 0; bare `weft`, its help on stderr with exit 1", () => {
    for (const args of [["--help"], ["agent", "--help"], ["help", "agent"], ["agent", "--key-fil", "k", "--help"]]) {
      const r = weft(args);
      expect([r.status, r.stderr]).toEqual([0, ""]);
      expect(r.stdout).toMatch(/^Usage: weft /);
    }
    const version = JSON.parse(readFileSync(projectFile("package.json"), "utf8")).version;
    // The build's commit after it (version.test.ts checks which).
    for (const args of [["--version"], ["agent", "--version"]])
      expect(weft(args)).toMatchObject({
        status: 0,
        stdout: expect.stringMatching(new RegExp(`^${version.replaceAll(".", "\\.")} \\(\\S+\\)\n$`)),
        stderr: "",
      });
    const bare = weft([]);
    expect([bare.status, bare.stdout]).toEqual([1, ""]);
    expect(bare.stderr).toMatch(/^Usage: weft /);
  });

  it("takes an empty WEFT_<FLAG> as unset: the default, a FLANNELD_<FLAG>, or a required flag missing", () => {
    // Each would be refused as a value: "" is no switch value, no number, no path.
    expect(
      weft(["agent", "--key-file", "k"], {
        WEFT_NET_CONFIG: missing,
        WEFT_IP_MASQ: "",
        WEFT_METRICS_PORT: "",
        WEFT_IFACE: "",
        WEFT_STATE_DIR: "",
      }),
    ).toMatchObject({ status: 1, stderr: unreadable });
    expect(
      weft(["agent", "--key-file", "k"], { WEFT_NET_CONFIG: "", FLANNELD_NET_CONFIG_PATH: missing }),
    ).toMatchObject({ status: 1, stderr: unreadable });
    expect(weft(["agent"], { WEFT_NET_CONFIG: missing, WEFT_KEY_FILE: "" }).stderr).toMatch(
      /^weft: \[CLI_MISSING_OPTION\] required option '--key-file <path>' not specified: /,
    );
  });

  it("takes a switch's value in each form its error lists, in any case", () => {
    const bad = weft(["agent", "--key-file", "k", "--ip-masq=yes"], { WEFT_NET_CONFIG: missing });
    expect(bad.stderr).toBe(
      'weft: [CLI_BAD_BOOLEAN] --ip-masq "yes" (or WEFT_IP_MASQ): use 1, t, true for on or 0, f, false for off (any case)\n',
    );
    const forms = /use (.*) for on or (.*) for off/
      .exec(bad.stderr)!
      .slice(1)
      .flatMap((l) => l.split(", "));
    expect(forms).toHaveLength(6);
    // Each on the command line as written, from the environment in capitals (Go's TRUE).
    for (const form of forms) {
      expect(weft(["agent", "--key-file", "k", `--ip-masq=${form}`], { WEFT_NET_CONFIG: missing }).stderr).toBe(
        unreadable,
      );
      expect(
        weft(["agent", "--key-file", "k"], { WEFT_NET_CONFIG: missing, WEFT_IP_MASQ: form.toUpperCase() }).stderr,
      ).toBe(unreadable);
    }
  });
});
