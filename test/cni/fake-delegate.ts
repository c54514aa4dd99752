// A stand-in delegate for tests of what the flannel plugin does around its delegate (the kept
// config, failures, STATUS and GC, which Debian's plugins lack): a script named `fake`, of CNI
// 1.1.0, that logs each call, keeps the config of its last GC, waits while a file `hold-<COMMAND>`
// exists beside it (30 s at most), and fails a command while a file `fail-<COMMAND>` does, printing
// a CNI error as a failing plugin does.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface FakeDelegate {
  /** The directory to put on CNI_PATH. */
  dir: string;
  /** "COMMAND containerId" of each call so far. */
  calls(): string[];
  /** Makes `command` fail (true) or succeed again. */
  fail(command: Command, on: boolean): void;
  /** Makes `command` wait (true) or go on. */
  hold(command: Command, on: boolean): void;
  /** The config its last GC was given. */
  lastGc(): Record<string, unknown>;
}

type Command = "ADD" | "DEL" | "CHECK" | "STATUS" | "GC";

export function fakeDelegate(dir: string): FakeDelegate {
  mkdirSync(dir, { recursive: true });
  const log = join(dir, "calls.log");
  writeFileSync(
    join(dir, "fake"),
    `#!/bin/sh
conf=$(cat)
echo "$CNI_COMMAND $CNI_CONTAINERID" >> '${log}'
if [ "$CNI_COMMAND" = GC ]; then printf '%s' "$conf" > '${dir}/gc.json'; fi
i=0; while [ -e '${dir}/hold-'"$CNI_COMMAND" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
if [ -e '${dir}/fail-'"$CNI_COMMAND" ]; then
  echo '{"cniVersion":"1.0.0","code":11,"msg":"fake '"$CNI_COMMAND"' failure"}'
  exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","interfaces":[],"ips":[]}'; fi
if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'; fi
`,
    { mode: 0o755 },
  );
  const flag = (name: string, on: boolean) => {
    const f = join(dir, name);
    if (on) writeFileSync(f, "");
    else rmSync(f, { force: true });
  };
  return {
    dir,
    calls: () => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : []),
    fail: (command, on) => flag(`fail-${command}`, on),
    hold: (command, on) => flag(`hold-${command}`, on),
    lastGc: () => JSON.parse(readFileSync(join(dir, "gc.json"), "utf8")) as Record<string, unknown>,
  };
}
