// `weft cni` and the installed plugin (entry.ts), kept lean (no agent code loaded) because a
// runtime starts one process per pod operation: CNI_* from the environment, the config from
// stdin, the result or a CNI error as JSON on stdout, exit status 0 or 1, as the CNI spec requires.
import { readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { asCniError, CNI_ERROR, CniError } from "./errors.js";
import type { CniCommand } from "./exec.js";
import { runPlugin } from "./plugin.js";

const COMMANDS: readonly CniCommand[] = ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"];

export async function cniMain(): Promise<number> {
  let stdin = "";
  let cniVersion = "1.0.0";
  try {
    const command = process.env.CNI_COMMAND as CniCommand | undefined;
    if (!command || !COMMANDS.includes(command)) {
      throw new CniError(
        CNI_ERROR.INVALID_ENV,
        `CNI_COMMAND is ${command ? `"${command}"` : "not set"}: expected one of ${COMMANDS.join(", ")}`,
        "this program is a CNI plugin, run by a container runtime; see README, Deploying",
      );
    }
    stdin = readFileSync(0, "utf8");
    cniVersion = versionOf(stdin) ?? cniVersion;
    const result = await runPlugin({
      stdin,
      args: {
        command,
        containerId: process.env.CNI_CONTAINERID,
        netns: process.env.CNI_NETNS,
        ifName: process.env.CNI_IFNAME,
        args: process.env.CNI_ARGS,
        path: (process.env.CNI_PATH ?? "").split(":").filter(Boolean),
      },
    });
    if (result !== undefined) process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } catch (error) {
    process.stdout.write(JSON.stringify(asCniError(error).toResult(cniVersion)) + "\n");
    return 1;
  }
}

function versionOf(stdin: string): string | undefined {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === "string" ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether this module is the file node was asked to run (symlinks resolved), not an import. */
function runAsFile(): boolean {
  try {
    return realpathSync(process.argv[1] ?? "") === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

// Launchers installed before entry.js existed run this file: an upgrade must not turn them into
// a plugin that does nothing and exits 0 (DEL "succeeding" without the delegate).
if (runAsFile()) process.exitCode = await cniMain();
