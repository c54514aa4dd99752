// Running a CNI plugin exactly as a container runtime does: found by its type name on CNI_PATH,
// CNI_* in the environment, the network config as JSON on stdin, the result (or a CNI error) as
// JSON on stdout. Used both by the flannel plugin to run its delegate and by the lab's runtime.
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { basename, join } from "node:path";
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

/** The first of `files` this process may run. */
function firstExecutable(files: string[]): string | undefined {
  return files.find((file) => {
    try {
      accessSync(file, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export function findPlugin(type: string, path: string[]): string {
  // A type is a file name, never a path: a config must not be able to run an arbitrary program.
  if (!/^[A-Za-z0-9_.-]+$/.test(type))
    throw new CniError(CNI_ERROR.INVALID_CONFIG, `plugin type "${type}" is not a valid plugin name`);
  const file = firstExecutable(path.map((dir) => join(dir, type)));
  if (file) return file;
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

/** Where coreutils has `timeout` (Debian: /usr/bin, and /bin through merged /usr or its own copy). */
const TIMEOUT_PROGRAMS = ["/usr/bin/timeout", "/bin/timeout"];

/** How long a plugin run with a timeout is given after its SIGTERM before its process group's SIGKILL. */
export const KILL_AFTER_MS = 5_000;

/** How much of a plugin's stderr is kept for an error's details (its end, where a crash says why). */
const STDERR_TAIL_BYTES = 64 * 1024;

/** The most a plugin may print on stdout: a CNI result is a few KiB; more is no result. */
const STDOUT_MAX_BYTES = 1024 * 1024;

/** The host's `timeout` (coreutils', GNU's or uutils'), found at a fixed path: a runtime's PATH may lack it, or lead elsewhere. */
export function timeoutProgram(): string {
  const file = firstExecutable(TIMEOUT_PROGRAMS);
  if (file) return file;
  throw new CniError(
    CNI_ERROR.IO_FAILURE,
    `cannot bound a plugin's run: coreutils' timeout is not at ${TIMEOUT_PROGRAMS.join(" or ")}`,
    "install coreutils (Debian: it is essential, so always there)",
  );
}

/**
 * Runs plugin `type` with `config` on stdin. Resolves with the parsed stdout (undefined when it
 * printed nothing, as DEL may); rejects with a CniError carrying the plugin's own code and message.
 * `wrap` prefixes argv, e.g. `ip netns exec <host>` to run it in a lab host's namespace; the
 * plugin inherits the descriptors `fds` (as 3, 4, ...). With `timeoutMs`, the plugin runs under
 * the host's `timeout`, in a process group of its own: SIGTERM to that group once that long has
 * passed, SIGKILL KILL_AFTER_MS later (after a signal passed on, below: SIGKILL at that bound, or
 * KILL_AFTER_MS after the signal if sooner), whether this process still lives or not (a runtime's
 * timeout SIGKILLs it); the call then fails. Whatever
 * else has its output (a child it left) is killed with the group once that bound has passed here
 * too, and once it is done, what is left in the group (a child with its output closed) is killed
 * too. A SIGTERM or SIGINT to this process meanwhile is passed on to that group.
 */
export async function execPlugin(
  type: string,
  config: object,
  a: CniArgs,
  opts: { wrap?: string[]; env?: NodeJS.ProcessEnv; fds?: number[]; timeoutMs?: number } = {},
): Promise<unknown> {
  // async: a plugin or `timeout` not found is a rejection, as every other failure, never a throw.
  const file = findPlugin(type, a.path);
  const ms = opts.timeoutMs;
  // The bound kept by a process of its own: this one's timer ends with this process, and a
  // plugin that ignores the SIGTERM passed on would run on. Status, stdio and descriptors pass
  // through timeout unchanged (a signal that ends the plugin ends timeout by the same signal);
  // 124 once that long has passed means it timed out (before, it is the plugin's own).
  const bound = ms === undefined ? [] : [timeoutProgram(), `--kill-after=${KILL_AFTER_MS / 1000}s`, `${ms / 1000}s`];
  const [cmd, ...argv] = [...bound, ...(opts.wrap ?? []), file];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, argv, {
      env: cniEnv(a, opts.env),
      stdio: ["pipe", "pipe", "pipe", ...(opts.fds ?? [])],
      detached: ms !== undefined, // its own process group (timeout's), to kill with what it started
    });
    // First: a spawn that fails for want of descriptors (EMFILE) has no pipes, and its error would
    // otherwise go unheard and end the process.
    child.on("error", (e) => reject(new CniError(CNI_ERROR.IO_FAILURE, `cannot run plugin ${file}: ${e.message}`)));
    if (!child.stdout || !child.stderr || !child.stdin) return;
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
    const timedOut = (limit: number, ending: string) =>
      new CniError(
        CNI_ERROR.PLUGIN_CRASHED,
        `plugin ${type} ${a.command} did not end within ${limit / 1000} s ${ending}`,
        "look for what it waits on (its own log); the runtime runs it again",
      );
    const killed = `(it, or a process it started that kept its output, still ran ${KILL_AFTER_MS / 1000} s later): its process group was killed`;
    // timeout's own bound ends at the plugin's end: a child it left with the output stays.
    const timer =
      ms === undefined
        ? undefined
        : setTimeout(() => {
            killGroup("SIGKILL");
            stopForwarding();
            // Not waiting for its output to close: a child that left the group may keep it open.
            child.stdout?.destroy();
            child.stderr?.destroy();
            reject(timedOut(ms, killed));
          }, ms + KILL_AFTER_MS);
    const out: Buffer[] = [];
    let outBytes = 0;
    child.stdout.on("data", (b: Buffer) => {
      outBytes += b.length;
      // Read on to the end, kept no more: the plugin is not blocked, nor this process's memory spent.
      if (outBytes <= STDOUT_MAX_BYTES) out.push(b);
    });
    const err: Buffer[] = [];
    let errBytes = 0;
    let errKept = 0;
    child.stderr.on("data", (b: Buffer) => {
      // As a runtime passes a plugin's stderr on (libcni does), so that its warnings are seen.
      process.stderr.write(b);
      errBytes += b.length;
      err.push(b);
      errKept += b.length;
      while (errKept - err[0].length >= STDERR_TAIL_BYTES) errKept -= err.shift()?.length ?? 0;
    });
    child.stdin.on("error", () => undefined); // a plugin may exit before reading its config; its exit says why
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      stopForwarding();
      // Run over, yet a child with its output closed may stay in the group, holding what it
      // inherited (the network's GC socket: every ADD then fails), with no timer left to end it.
      killGroup("SIGKILL");
      if (outBytes > STDOUT_MAX_BYTES) {
        reject(
          new CniError(
            CNI_ERROR.DECODE_FAILURE,
            `plugin ${type} ${a.command} printed ${outBytes} bytes on stdout (${signal ?? `exit ${code}`}), over the ${STDOUT_MAX_BYTES} a CNI result may take`,
            "look at what it prints (its stdout is its result, a few KiB of JSON)",
          ),
        );
        return;
      }
      const stdout = Buffer.concat(out).toString("utf8").trim();
      const stderr = Buffer.concat(err).subarray(-STDERR_TAIL_BYTES).toString("utf8").trim();
      // timeout's own message, alone on stderr (the plugin never ran), starts with its argv[0]
      // (coreutils') or its name (uutils').
      const first = errBytes <= STDERR_TAIL_BYTES ? stderr.split("\n")[0] : "";
      const byTimeout = ms !== undefined && [`${cmd}: `, `${basename(cmd)}: `].some((p) => first.startsWith(p));
      let parsed: unknown;
      try {
        parsed = stdout ? JSON.parse(stdout) : undefined;
      } catch {
        parsed = undefined;
      }
      if ((code === 126 || code === 127) && byTimeout) {
        // timeout's own: it could not exec the plugin (a missing interpreter, EACCES, a
        // directory), whose own 126/127 would say nothing so.
        reject(new CniError(CNI_ERROR.IO_FAILURE, `cannot run plugin ${file}: ${stderr}`));
        return;
      }
      if (code === 125 && byTimeout) {
        // timeout's own failure (its fork's EAGAIN under a pids or process limit): the plugin never ran.
        reject(
          new CniError(
            CNI_ERROR.TRY_AGAIN_LATER,
            `cannot run plugin ${type} ${a.command}: ${cmd} failed (${first})`,
            "the runtime tries again; if it keeps failing, look at the node's process limits (pids.max, ulimit -u)",
          ),
        );
        return;
      }
      const usage = first.startsWith("Usage: timeout") || (byTimeout && first.includes(": unrecognized option"));
      if (ms !== undefined && code === 1 && !stdout && usage) {
        // Neither GNU's nor uutils' coreutils (busybox's refuses --kill-after): the plugin never ran.
        reject(
          new CniError(
            CNI_ERROR.IO_FAILURE,
            `cannot bound plugin ${type}'s run: ${cmd} refuses --kill-after (${first})`,
            "install coreutils, GNU's or uutils' (Debian: apt-get install coreutils), whose timeout takes --kill-after",
          ),
        );
        return;
      }
      // A plugin's own 124, or a SIGKILL of its own, before the bound is its own failure.
      if (ms !== undefined && (code === 124 || signal === "SIGKILL") && performance.now() - started >= ms) {
        // timeout's 124 (its SIGTERM ended the plugin; what it left was killed above), or its
        // SIGKILL (which ends timeout too).
        reject(
          timedOut(
            ms,
            code === 124
              ? "(SIGTERM ended it; what it left in its process group was killed)"
              : `(nor ${KILL_AFTER_MS / 1000} s after SIGTERM): its process group was killed`,
          ),
        );
        return;
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
            (stderr || stdout).slice(-2000),
          ),
        );
      }
    });
    child.stdin.end(JSON.stringify(config));
  });
}
