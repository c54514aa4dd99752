// The one way weft changes kernel state: iproute2 (`ip -json` to read, `ip -batch` and
// `bridge -batch` to write) and `nft -f`; iptables only to remove rules other programs left:
// flannel's masquerade (flannel-masq.ts) and the CNI bridge plugin's per-pod ones (GC, DEL);
// nsenter only to read a pod's addresses in its CNI_NETNS (a path, not a name `ip -n` takes).
// Everything that programs links, addresses, routes, neighbours, FDB entries or nftables goes
// through a Kernel, so what weft does to a host can be read in one place and replayed by hand. A
// Kernel can target a named network namespace (`-n`), which the lab (demo, tests, benchmarks)
// uses; the agent itself runs inside its host's namespace.
import { execFile, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { isWeftError, WeftError } from "../errors.js";
import { familyOf, isGlobalUnicast, parseAddr } from "../net/ip.js";

export interface KernelOptions {
  /** Network namespace name (as `ip netns` lists it); the current one when absent. */
  netns?: string;
}

/** A line of a `-force` batch that the kernel or iproute2 refused. */
export interface BatchFailure {
  /** 1-based line number; undefined when iproute2 stopped without saying where (some `ip neigh` errors exit at once). */
  line?: number;
  command: string;
  message: string;
}

/** A command run and what it said; failures carry it for the error message. */
interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

function run(cmd: string, args: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 256 << 20 }, (error, stdout, stderr) => {
      // Only a spawn that finds no tool to run means it is missing: one killed by a signal (code
      // null) or cut off at maxBuffer ran, and what it did (listed nft tables, say) is unknown.
      if (error && (error.code === "ENOENT" || error.code === "EACCES")) {
        reject(kernelToolMissing(cmd, error.message, error));
        return;
      }
      if (error && typeof error.code !== "number") {
        const why = error.signal ? `was killed by ${error.signal}` : `failed: ${error.message}`;
        const what = `\`${cmd} ${args.join(" ")}\` ${why}, so what it did is not known: run it by hand to see why`;
        reject(new WeftError("KERNEL_COMMAND_FAILED", what, { cause: error }));
        return;
      }
      resolve({ stdout, stderr, code: error ? Number(error.code) : 0 });
    });
    // A tool that fails before it reads its script (nft without a usable nf_tables) closes the
    // pipe: the write's EPIPE would be an unhandled error that ends the process, while its exit
    // code and stderr above say what failed.
    if (input !== undefined) child.stdin!.on("error", () => undefined).end(input);
  });
}

/** A tool weft runs is not there: why, and the package that brings it. */
function kernelToolMissing(cmd: string, why: string, cause?: unknown): WeftError {
  const pkg = cmd.includes("iptables")
    ? "iptables (apt-get install iptables)"
    : cmd === "nsenter"
      ? "util-linux (apt-get install util-linux)"
      : "iproute2 and nftables (apt-get install iproute2 nftables)";
  return new WeftError(
    "KERNEL_TOOL_MISSING",
    `cannot run ${cmd}: ${why}; install ${pkg}`,
    cause ? { cause } : undefined,
  );
}

/** iptables or ip6tables, or their -legacy forms (Debian's names for iptables-legacy's tools). */
export const iptablesTool = (family: 4 | 6, legacy = false) =>
  `${family === 6 ? "ip6tables" : "iptables"}${legacy ? "-legacy" : ""}`;

/** Whether a /proc/net/ip{,6}_tables_names listing names the nat table. */
function hasNat(names: string): boolean {
  return names.split("\n").includes("nat");
}

export class Kernel {
  constructor(readonly opts: KernelOptions = {}) {}

  private nsArgs(): string[] {
    return this.opts.netns ? ["-n", this.opts.netns] : [];
  }

  /** `ip -json <args>` parsed; an empty answer is an empty list. */
  async ipJson<T = unknown[]>(args: string[]): Promise<T> {
    const r = await run("ip", [...this.nsArgs(), "-json", ...args]);
    if (r.code !== 0) throw commandError("ip", args.join(" "), r);
    return r.stdout.trim() ? ipJsonParse<T>(args.join(" "), r.stdout) : ([] as T);
  }

  /** `bridge -json <args>` parsed. */
  async bridgeJson<T = unknown[]>(args: string[]): Promise<T> {
    const r = await run("bridge", [...this.nsArgs(), "-json", ...args]);
    if (r.code !== 0) throw commandError("bridge", args.join(" "), r);
    return (r.stdout.trim() ? JSON.parse(r.stdout) : []) as T;
  }

  /** Applies `ip` commands (without the leading "ip") in one `ip -batch`; stops at the first failure. */
  ipBatch(lines: string[]): Promise<void> {
    return this.batch("ip", lines);
  }

  /** Applies `bridge` commands (fdb ...) in one `bridge -batch`. */
  bridgeBatch(lines: string[]): Promise<void> {
    return this.batch("bridge", lines);
  }

  /**
   * Applies every `ip` line it can (`ip -force -batch`): a refused line is reported and the rest
   * still run, so one bad peer never holds up the others.
   */
  async ipBatchForce(lines: string[]): Promise<BatchFailure[]> {
    const { failures } = await this.forceBatch("ip", lines, false);
    const stopped = failures.find((f) => f.line === undefined);
    if (!stopped) return failures.filter(refused);
    // iproute2's `ip neigh` exits at once when the kernel refuses it, even under -force, without
    // saying which line: the lines after the last one reported run again, halved until the one
    // that stops a batch runs alone, so a refusal costs some 2·log2(n) calls, not n.
    const from = Math.max(0, ...failures.map((f) => f.line ?? 0));
    return [
      ...failures.filter((f) => f !== stopped && refused(f)),
      ...(await this.ipBatchAgain(lines, from, lines.length)),
    ];
  }

  /** Runs lines[from, to) again under -force (a delete that finds nothing now may have run the first time). */
  private async ipBatchAgain(lines: string[], from: number, to: number): Promise<BatchFailure[]> {
    if (from >= to) return [];
    const { failures } = await this.forceBatch("ip", lines.slice(from, to), false);
    const alone = to - from === 1;
    const stopped = failures.find((f) => f.line === undefined);
    const reported = failures
      .map((f) => (f === stopped && alone ? { ...f, line: 1, command: lines[from] } : f))
      .filter((f) => f.line !== undefined)
      .map((f) => ({ ...f, line: f.line! + from }))
      .filter(refused);
    if (!stopped || alone) return reported;
    const rest = from + Math.max(0, ...failures.map((f) => f.line ?? 0));
    const half = rest + Math.ceil((to - rest) / 2);
    return [
      ...reported,
      ...(await this.ipBatchAgain(lines, rest, half)),
      ...(await this.ipBatchAgain(lines, half, to)),
    ];
  }

  /** `bridge -force -batch`, as ipBatchForce. */
  async bridgeBatchForce(lines: string[]): Promise<BatchFailure[]> {
    return (await this.forceBatch("bridge", lines, false)).failures.filter(refused);
  }

  /**
   * Runs read commands (e.g. `route get X`) in one `ip -json -force -batch` (with -4/-6 when
   * `family` is given); answers[i] is line i's parsed output, undefined where the line failed.
   */
  async ipJsonBatch<T = unknown[]>(
    lines: string[],
    family?: 4 | 6,
  ): Promise<{ answers: (T | undefined)[]; failures: BatchFailure[] }> {
    if (lines.length === 0) return { answers: [], failures: [] };
    const { stdout, failures } = await this.forceBatch("ip", lines, true, family);
    // Each successful line prints one JSON document on its own line; failed lines print nothing.
    const outputs = stdout.split("\n").filter((l) => l.trim() !== "");
    const failed = new Set(failures.map((f) => f.line));
    let next = 0;
    const answers = lines.map((line, i) =>
      failed.has(i + 1) || next >= outputs.length ? undefined : ipJsonParse<T>(line, outputs[next++]),
    );
    return { answers, failures };
  }

  /** Runs a tool that has no namespace option of its own, inside this namespace (`ip netns exec`). */
  private async inNs(cmd: string, args: string[], input?: string): Promise<RunResult> {
    if (!this.opts.netns) return run(cmd, args, input);
    const r = await run("ip", ["netns", "exec", this.opts.netns, cmd, ...args], input);
    // `ip netns exec` says so itself where the command is missing: missing as it is without a namespace.
    if (/^exec of "[^"]*" failed: No such file/m.test(r.stderr)) throw kernelToolMissing(cmd, "not installed");
    return r;
  }

  /** Applies an nftables script atomically (`nft -f -`: all of it or none). */
  async nft(script: string): Promise<void> {
    const r = await this.inNs("nft", ["-f", "-"], script);
    if (r.code !== 0) throw commandError("nft", script.split("\n")[0] + " ...", r);
  }

  /** `nft -j list ...` parsed. */
  async nftJson<T = unknown>(args: string[]): Promise<T> {
    const nftArgs = ["-j", "list", ...args];
    const r = await this.inNs("nft", nftArgs);
    if (r.code !== 0) throw commandError("nft", nftArgs.join(" "), r);
    return JSON.parse(r.stdout) as T;
  }

  /** The nftables tables here, each as `family name` (`ip weft`). */
  async nftTables(): Promise<string[]> {
    const j = await this.nftJson<{ nftables: Array<{ table?: { family: string; name: string } }> }>(["tables"]);
    return j.nftables.flatMap((e) => (e.table ? [`${e.table.family} ${e.table.name}`] : []));
  }

  /**
   * The families of interface `dev`'s global unicast addresses (Go's, as the CNI plugins take them)
   * in the namespace at `path` (a CNI_NETNS: a path, which `ip -n` cannot take, so entered with
   * nsenter); none without `dev`.
   */
  async globalAddressFamilies(path: string, dev: string): Promise<Array<4 | 6>> {
    const args = [`--net=${path}`, "ip", "-json", "addr", "show", "dev", dev];
    const r = await run("nsenter", args);
    if (r.code !== 0 && /does not exist/.test(r.stderr)) return [];
    if (r.code !== 0) throw commandError("nsenter", args.join(" "), r);
    const links = ipJsonParse<Array<{ addr_info?: Array<{ local?: string }> }>>(args.slice(3).join(" "), r.stdout);
    const addrs = links.flatMap((l) => l.addr_info ?? []).flatMap((a) => (a.local ? [parseAddr(a.local)] : []));
    return ([4, 6] as const).filter((f) => addrs.some((a) => familyOf(a) === f && isGlobalUnicast(a)));
  }

  /**
   * `iptables -S` of a table (ip6tables for family 6; iptables-legacy's with `legacy`), one rule or
   * chain per line; undefined where the host has no such tool or table (IPv6 off, its module
   * absent), so none of its rules can be there (weft writes no iptables rules: it only removes
   * flannel's and the CNI bridge plugin's).
   */
  async iptablesRules(family: 4 | 6, table: string, legacy = false): Promise<string[] | undefined> {
    const tool = iptablesTool(family, legacy);
    const args = ["-w", "5", "-t", table, "-S"];
    const r = await this.iptablesRun(tool, args);
    if (r === undefined || (r.code !== 0 && /Table does not exist|Address family not supported/i.test(r.stderr)))
      return undefined;
    if (r.code !== 0) throw commandError(tool, args.join(" "), r);
    return r.stdout.split("\n").filter((l) => l !== "");
  }

  /** Applies an iptables-restore script (ip6tables-restore for family 6) whole, other rules kept (--noflush). */
  async iptablesRestore(family: 4 | 6, script: string, legacy = false): Promise<void> {
    const tool = `${iptablesTool(family, legacy)}-restore`;
    const r = await this.iptablesRun(tool, ["-w", "5", "--noflush"], script);
    if (r === undefined) throw kernelToolMissing(tool, "not installed");
    if (r.code !== 0) throw commandError(tool, script.trim().split("\n").join("; "), r);
  }

  /**
   * Deletes lines of a table's `iptablesRules` listing in one iptables-restore transaction (all or
   * none, other rules kept): a rule (`-A …`) by its `-D …`, a chain line (`-F`, `-X`, or a
   * declaration `:NAME - [0:0]`, which flushes it) as it is. Resolves with those lines, each as the
   * shell command that runs it alone (for messages, and a hand where it failed; a declaration has
   * no such form, and only the CNI plugin, which names none, passes one), and the error if it failed.
   */
  async iptablesDelete(
    family: 4 | 6,
    table: string,
    lines: string[],
    legacy = false,
  ): Promise<{ commands: string[]; error?: Error }> {
    const script = lines.map((l) => (l.startsWith("-A ") ? `-D${l.slice(2)}` : l));
    const commands = script.map((l) => `${iptablesTool(family, legacy)} -t ${table} ${l}`);
    try {
      await this.iptablesRestore(family, `${[`*${table}`, ...script, "COMMIT"].join("\n")}\n`, legacy);
      return { commands };
    } catch (error) {
      return { commands, error: error as Error };
    }
  }

  /**
   * Whether this namespace has a nat table of the kernel's legacy xtables (iptables-legacy's),
   * which an nft-backed iptables does not show; reading the list loads nothing, and only a nat
   * table there is looked into (listing one where there is none would make it).
   */
  async hasLegacyIptables(family: 4 | 6): Promise<boolean> {
    const file = `/proc/net/${family === 6 ? "ip6_tables_names" : "ip_tables_names"}`;
    if (!this.opts.netns)
      return readFile(file, "utf8").then(
        (t) => hasNat(t),
        () => false,
      );
    const r = await this.inNs("cat", [file]);
    return r.code === 0 && hasNat(r.stdout);
  }

  /** Runs an iptables command here or in the namespace; undefined where it is not installed. */
  private async iptablesRun(tool: string, args: string[], input?: string): Promise<RunResult | undefined> {
    try {
      return await this.inNs(tool, args, input);
    } catch (err) {
      if (isWeftError(err, "KERNEL_TOOL_MISSING")) return undefined;
      throw err;
    }
  }

  /**
   * Sets a sysctl (net.ipv4.ip_forward, or by its slash name where a device name holds a dot) in
   * this namespace. Without a namespace it writes /proc/sys itself, as readSysctls reads it: no
   * sysctl binary needed (container images come without procps).
   */
  async sysctl(key: string, value: string | number): Promise<void> {
    if (!this.opts.netns) {
      try {
        await writeFile(`/proc/sys/${key.includes("/") ? key : key.replaceAll(".", "/")}`, `${value}\n`);
      } catch (cause) {
        const readOnly = (cause as NodeJS.ErrnoException).code === "EROFS";
        throw new WeftError(
          readOnly ? "KERNEL_SYSCTL_READ_ONLY" : "KERNEL_COMMAND_FAILED",
          `cannot set sysctl ${key}=${value}: ${(cause as Error).message}${readOnly ? " (a container's /proc/sys is read-only unless it runs privileged)" : ""}`,
          { cause },
        );
      }
      return;
    }
    const args = ["-q", "-w", `${key}=${value}`];
    const r = await this.inNs("sysctl", args);
    if (r.code !== 0) throw commandError("sysctl", args.join(" "), r);
  }

  /**
   * Whether the kernel has IPv6 (not booted with ipv6.disable=1, which takes away net/ipv6 and
   * every sysctl under it). Kernel-wide, so this process's /proc/sys says it for every namespace.
   */
  hasIpv6(): boolean {
    return existsSync("/proc/sys/net/ipv6");
  }

  /**
   * Reads sysctls by their slash names (net/ipv6/conf/weft.1/forwarding: a device name may hold a
   * dot) in this namespace, values in the order asked. Without a namespace it reads /proc/sys on
   * the calling thread, which costs no process (reconcile reads them every few seconds); a net
   * sysctl is that of the opening thread's namespace, so not on a pool thread.
   */
  async readSysctls(keys: string[]): Promise<string[]> {
    if (!this.opts.netns) return keys.map((k) => readFileSync(`/proc/sys/${k}`, "utf8").trim());
    const args = ["-n", ...keys];
    const r = await this.inNs("sysctl", args);
    if (r.code !== 0) throw commandError("sysctl", args.join(" "), r);
    return r.stdout.trim().split("\n");
  }

  /** `family` is the whole batch's -4/-6 (a batch line cannot carry one, and some reads default to IPv4). */
  private async forceBatch(
    tool: "ip" | "bridge",
    lines: string[],
    json: boolean,
    family?: 4 | 6,
  ): Promise<{ stdout: string; failures: BatchFailure[] }> {
    if (lines.length === 0) return { stdout: "", failures: [] };
    const r = await run(
      tool,
      [...this.nsArgs(), ...(family ? [`-${family}`] : []), ...(json ? ["-json"] : []), "-force", "-batch", "-"],
      lines.join("\n") + "\n",
    );
    return { stdout: r.stdout, failures: batchFailures(lines, r) };
  }

  private async batch(tool: "ip" | "bridge", lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    const r = await run(tool, [...this.nsArgs(), "-batch", "-"], lines.join("\n") + "\n");
    if (r.code === 0) return;
    const at = /Command failed -:(\d+)/.exec(r.stderr);
    const line = at ? lines[Number(at[1]) - 1] : lines.join("; ");
    throw commandError(tool, line, r);
  }
}

/**
 * `ip -json <command>`'s output parsed. Before iproute2 5.0 `ip -json route get` printed text
 * (host-gw and vxlan's DirectRouting read it every round), so text says iproute2 is too old.
 */
function ipJsonParse<T>(command: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (cause) {
    // Only where the output is unusable, so the caller fails or falls back anyway (a round fails;
    // the CNI DEL's address read sweeps every family): one synchronous `ip -V` holds up nothing
    // that would have worked.
    const version = spawnSync("ip", ["-V"], { encoding: "utf8" }).stdout?.trim() || "version unknown";
    throw new WeftError(
      "KERNEL_IPROUTE2_TOO_OLD",
      `\`ip -json ${command}\` printed no JSON (${version}); weft needs iproute2 5.0 or later: upgrade iproute2`,
      { cause },
    );
  }
}

/**
 * Whether a failure is one: a delete that finds nothing (someone removed the entry after it was
 * read) has its goal, so it is no failure.
 */
function refused(f: BatchFailure): boolean {
  return !(/^\S+ del /.test(f.command) && /No such file or directory|No such process/.test(f.message));
}

/** Reads `-force` batch errors: each line's messages, then "Command failed -:N". */
function batchFailures(lines: string[], r: RunResult): BatchFailure[] {
  const failures: BatchFailure[] = [];
  let said: string[] = [];
  for (const text of r.stderr.split("\n")) {
    const at = /^Command failed -:(\d+)/.exec(text);
    if (at) {
      const line = Number(at[1]);
      failures.push({ line, command: lines[line - 1], message: said.join("; ") || `exit code ${r.code}` });
      said = [];
    } else if (text.trim()) {
      said.push(text.trim());
    }
  }
  if (r.code !== 0 && (said.length > 0 || failures.length === 0)) {
    failures.push({ command: "(the batch stopped early)", message: said.join("; ") || `exit code ${r.code}` });
  }
  return failures;
}

function commandError(tool: string, command: string, r: RunResult): WeftError {
  const said = r.stderr.replace(/Command failed -:\d+\s*/g, "").trim() || `exit code ${r.code}`;
  return new WeftError("KERNEL_COMMAND_FAILED", `\`${tool} ${command}\` failed: ${said}`);
}
