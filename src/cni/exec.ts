// Running a CNI plugin exactly as a container runtime does: found by its type name on CNI_PATH,
// CNI_* in the environment, the network config as JSON on stdin, the result (or a CNI error) as
// JSON on stdout. Used both by the flannel plugin to run its delegate and by the lab's runtime.
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { join } from "node:path";
import { CNI_ERROR, CniError } from "./errors.js";

export type CniCommand = "ADD" | "DEL" | "CHECK" | "VERSION" | "STATUS" | "GC";

/** The CNI_* variables of one call (CNI_PATH as a list of directories). */
export interface CniArgs {
  command: CniCommand;
  containerId?: string;
  netns?: string;
  ifName?: string;
  /** CNI_ARGS, "K=V;K=V". */
  args?: string;
  path: string[];
}

export function findPlugin(type: string, path: string[]): string {
  // A type is a file name, never a path: a config must not be able to run an arbitrary program.
  if (!/^[A-Za-z0-9_.-]+$/.test(type))
    throw new CniError(CNI_ERROR.INVALID_CONFIG, `plugin type "${type}" is not a valid plugin name`);
  for (const dir of path) {
    const file = join(dir, type);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  throw new CniError(
    CNI_ERROR.INVALID_CONFIG,
    `plugin "${type}" not found in CNI_PATH ${path.join(":")}`,
    "install it there (Debian: apt-get install containernetworking-plugins, which puts them in /usr/lib/cni)",
  );
}

export function cniEnv(a: CniArgs, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, CNI_COMMAND: a.command, CNI_PATH: a.path.join(":") };
  for (const [k, v] of [
    ["CNI_CONTAINERID", a.containerId],
    ["CNI_NETNS", a.netns],
    ["CNI_IFNAME", a.ifName],
    ["CNI_ARGS", a.args],
  ] as const) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/**
 * Runs plugin `type` with `config` on stdin. Resolves with the parsed stdout (undefined when it
 * printed nothing, as DEL may); rejects with a CniError carrying the plugin's own code and message.
 * `wrap` prefixes argv, e.g. `ip netns exec <host>` to run it in a lab host's namespace; the
 * plugin inherits the descriptors `fds` (as 3, 4, ...). With `timeoutMs`, the plugin runs in a
 * process group of its own, killed (SIGKILL) once that long has passed without the plugin and
 * whatever else has its output (a child it left) done: the call then fails. Once it is done,
 * what is left in the group (a child with its output closed) is killed too. A SIGTERM or SIGINT
 * to this process meanwhile is passed on to that group.
 */
export function execPlugin(
  type: string,
  config: object,
  a: CniArgs,
  opts: { wrap?: string[]; env?: NodeJS.ProcessEnv; fds?: number[]; timeoutMs?: number } = {},
): Promise<unknown> {
  const file = findPlugin(type, a.path);
  const [cmd, ...argv] = [...(opts.wrap ?? []), file];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      env: cniEnv(a, opts.env),
      stdio: ["pipe", "pipe", "pipe", ...(opts.fds ?? [])],
      detached: opts.timeoutMs !== undefined, // its own process group, to kill with what it started
    });
    // First: a spawn that fails for want of descriptors (EMFILE) has no pipes, and its error would
    // otherwise go unheard and end the process.
    child.on("error", (e) => reject(new CniError(CNI_ERROR.IO_FAILURE, `cannot run plugin ${file}: ${e.message}`)));
    if (!child.stdout || !child.stderr || !child.stdin) return;
    const ms = opts.timeoutMs;
    const pid = ms === undefined ? undefined : child.pid;
    // Known empty once the plugin exited with none left in it: its number may then be reused.
    let groupGone = false;
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        if (pid !== undefined && !groupGone) process.kill(-pid, signal);
      } catch {
        // the group is gone already
      }
    };
    // In a group of its own, the plugin no longer gets what weft's group does (a runtime's or a
    // shell's SIGTERM, SIGINT): passed on, else it outlives weft and the timer, unbounded.
    const forward = (signal: NodeJS.Signals) => {
      killGroup(signal);
      stopForwarding();
      // Nothing else handles it: weft ends by it, as it would have without this handler.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    const stopForwarding = () => {
      process.off("SIGTERM", forward);
      process.off("SIGINT", forward);
    };
    if (pid !== undefined) {
      process.on("SIGTERM", forward);
      process.on("SIGINT", forward);
      child.on("exit", () => {
        try {
          process.kill(-pid, 0);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ESRCH") return;
          groupGone = true;
          stopForwarding();
        }
      });
    }
    const timer =
      ms === undefined
        ? undefined
        : setTimeout(() => {
            killGroup("SIGKILL");
            stopForwarding();
            // Not waiting for its output to close: a child that left the group may keep it open.
            child.stdout?.destroy();
            child.stderr?.destroy();
            reject(
              new CniError(
                CNI_ERROR.PLUGIN_CRASHED,
                `plugin ${type} ${a.command} did not end within ${ms / 1000} s (it, or a process it started that kept its output, still ran): its process group was killed`,
                "look for what it waits on (its own log); the runtime runs it again",
              ),
            );
          }, ms);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => undefined); // a plugin may exit before reading its config; its exit says why
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      stopForwarding();
      // Run over, yet a child with its output closed may stay in the group, holding what it
      // inherited (the network's GC socket: every ADD then fails), with no timer left to end it.
      killGroup("SIGKILL");
      const stdout = Buffer.concat(out).toString("utf8").trim();
      const stderr = Buffer.concat(err).toString("utf8").trim();
      let parsed: unknown;
      try {
        parsed = stdout ? JSON.parse(stdout) : undefined;
      } catch {
        parsed = undefined;
      }
      if (code === 0) {
        if (stdout && parsed === undefined)
          reject(new CniError(CNI_ERROR.DECODE_FAILURE, `plugin ${type} printed no JSON result`, stdout.slice(0, 500)));
        else resolve(parsed);
        return;
      }
      const e = parsed as { code?: unknown; msg?: unknown; details?: unknown } | undefined;
      if (e && typeof e.code === "number" && typeof e.msg === "string") {
        reject(new CniError(e.code, `${type}: ${e.msg}`, typeof e.details === "string" ? e.details : ""));
      } else {
        reject(
          new CniError(
            CNI_ERROR.PLUGIN_CRASHED,
            `plugin ${type} ${a.command} failed (${signal ?? `exit ${code}`}) without a CNI error`,
            (stderr || stdout).slice(0, 2000),
          ),
        );
      }
    });
    child.stdin.end(JSON.stringify(config));
  });
}
