// A stand-in delegate for tests of what the flannel plugin does around its delegate (the kept
// config, failures, STATUS and GC, which Debian's plugins lack): a script named `fake`, of CNI
// 1.1.0, that logs each call and fails a command while a file `fail-<COMMAND>` exists beside it,
// printing a CNI error as a failing plugin does.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface FakeDelegate {
  /** The directory to put on CNI_PATH. */
  dir: string;
  /** "COMMAND containerId" of each call so far. */
  calls(): string[];
  /** Makes `command` fail (true) or succeed again. */
  fail(command: "ADD" | "DEL" | "CHECK" | "STATUS" | "GC", on: boolean): void;
}

export function fakeDelegate(dir: string): FakeDelegate {
  mkdirSync(dir, { recursive: true });
  const log = join(dir, "calls.log");
  writeFileSync(
    join(dir, "fake"),
    `#!/bin/sh
cat >/dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID" >> '${log}'
if [ -e '${dir}/fail-'"$CNI_COMMAND" ]; then
  echo '{"cniVersion":"1.0.0","code":11,"msg":"fake '"$CNI_COMMAND"' failure"}'
  exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","interfaces":[],"ips":[]}'; fi
if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'; fi
`,
    { mode: 0o755 },
  );
  return {
    dir,
    calls: () => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : []),
    fail: (command, on) => {
      const f = join(dir, `fail-${command}`);
      if (on) writeFileSync(f, "");
      else rmSync(f, { force: true });
    },
  };
}
