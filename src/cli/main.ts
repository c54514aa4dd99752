#!/usr/bin/env node
// `weft`: the node agent and its tools. Flag names follow flanneld's where it has them; every
// flag can also come from the environment as WEFT_<FLAG> (e.g. WEFT_NET_CONFIG), and a flag
// shared with flanneld from FLANNELD_<FLAG> too (flanneld.ts).
import { randomBytes } from "node:crypto";
import { Command, Option } from "commander";
import { pino } from "pino";
import { Agent, type AgentOptions } from "../agent/agent.js";
import { AgentKeys } from "../agent/keys.js";
import { buildInfo, commitLabel } from "../build-info.js";
import { EXIT_UNDERLAY_CHANGED } from "../agent/underlay.js";
import { configReference } from "../config/net-conf.js";
import { KEY_BYTES, Keyring } from "../control/gossip/keyring.js";
import { type CliErrorCode, errorMessage, isWeftError, WeftError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { DEFAULT_SUBNET_FILE } from "../paths.js";
import { agentRequest } from "./agent-client.js";
import { AgentLogStream } from "./agent-log.js";
import { runDemo } from "./demo.js";
import {
  adoptFlanneldEnv,
  dropEmptyEnv,
  envName,
  envSource,
  ignoredFlanneldEnv,
  refuseFlanneldFlags,
} from "./flanneld.js";

/** package.json's version, which every build shares, and the commit that tells builds apart. */
const VERSION = `${buildInfo().version} (${commitLabel(buildInfo())})`;

const program = new Command("weft")
  .description("node agent for container overlay networks: gossip-leased subnets, kernel and WebAssembly dataplanes")
  .version(VERSION);

/** A flag that can also come from WEFT_<FLAG>, named after it (--net-config: WEFT_NET_CONFIG). */
const flag = (spec: string, description: string) => {
  const option = new Option(spec, description);
  return option.env(envName("WEFT", option.long!));
};
/** Comma-separated and repeatable; items trimmed, so that "a, b" (a ConfigMap's habit) is a and b. */
const list = (v: string, prev: string[] = []) => [
  ...prev,
  ...v
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean),
];
/** Repeatable, never split: a regex may hold commas ({1,3}), as flanneld's --iface-regex may. */
const each = (v: string, prev: string[] = []) => [...prev, v];
/** A whole number for `flag` (or its variable `env`); limits are checked where the value is used, naming the flag too. */
const int = (flag: string, env?: string) => (v: string) => {
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n < 0)
    throw new WeftError("CLI_BAD_NUMBER", `${flag} "${v}"${env ? ` (or ${envSource(env)})` : ""}: not a whole number`);
  return n;
};
/** A `flag` taking a whole number. */
const intFlag = (spec: string, description: string) => {
  const option = flag(spec, description);
  return option.argParser(int(option.long!, option.envVar));
};

/** Go's strconv.ParseBool, as flanneld reads `--ip-masq=false` (any case: Go takes TRUE and True). */
const [ON, OFF] = [
  ["1", "t", "true"],
  ["0", "f", "false"],
];
const BOOLEANS: Record<string, boolean> = {
  ...Object.fromEntries(ON.map((v) => [v, true])),
  ...Object.fromEntries(OFF.map((v) => [v, false])),
};
/**
 * A switch: bare, it is on; with a value (`--ip-masq=false`, or WEFT_IP_MASQ=false, which
 * commander would otherwise take as on merely for being set) it is what the value says.
 */
const toggle = (name: string, description: string) => {
  const option = flag(`--${name} [true|false]`, description);
  return option
    .preset("true")
    .default(false)
    .argParser((v: string) => {
      const b = BOOLEANS[v.trim().toLowerCase()];
      if (b === undefined)
        throw new WeftError(
          "CLI_BAD_BOOLEAN",
          `--${name} "${v}" (or ${envSource(option.envVar!)}): use ${ON.join(", ")} for on or ${OFF.join(", ")} for off (any case)`,
        );
      return b;
    });
};

/** Commander's own steps of a parse (commander 14), which its typings leave out: internals a
 *  minor release may rename, so either may be missing. */
interface CommanderSteps {
  _outputHelpIfRequested?: (args: readonly string[]) => void;
  unknownOption?: (flag: string) => void;
}

/**
 * `weft agent`: flanneld's flags it has no equivalent of are refused with what to do (commander
 * would say only "unknown option"), and flanneld's variables of the flags it shares are read.
 */
class AgentCommand extends Command {
  /** FLANNELD_<FLAG> variables a different WEFT_<FLAG> shadowed, logged once the agent has a log. */
  flanneldShadowed: Array<{ variable: string; shadowedBy: string }> = [];

  override parseOptions(argv: string[]) {
    const parsed = super.parseOptions(argv);
    refuseFlanneldFlags(parsed.unknown, this);
    // Commander checks mandatory flags before unknown ones, so `--key-fil k` was reported as
    // --key-file missing, hiding the typo: unknown ones first, once help asked for had its turn
    // (commander's own steps, in its order otherwise). A commander without them (renamed) keeps
    // its own order: the typo is reported after a missing flag, not a crash.
    const steps = this as unknown as CommanderSteps;
    if (
      parsed.unknown.length > 0 &&
      typeof steps._outputHelpIfRequested === "function" &&
      typeof steps.unknownOption === "function"
    ) {
      steps._outputHelpIfRequested(parsed.unknown);
      steps.unknownOption(parsed.unknown[0]);
    }
    // Commander reads the environment right after this.
    this.flanneldShadowed = adoptFlanneldEnv(process.env, this);
    return parsed;
  }
}

const agentCommand = new AgentCommand("agent");
program.addCommand(agentCommand);
agentCommand
  .description("run the agent on this host")
  // flanneld's --version, so that a unit or probe asking it still gets an answer.
  .version(VERSION)
  .addOption(flag("--net-config <path>", "flannel's net-conf.json").default("/etc/kube-flannel/net-conf.json"))
  // flanneld's name for it.
  .addOption(new Option("--net-config-path <path>", "the same as --net-config").hideHelp())
  .addOption(
    flag(
      "--iface <name|ip...>",
      "interface (name, IPv4 or IPv6 address) for the underlay; repeat or comma-separate, first match wins",
    ).argParser(list),
  )
  .addOption(
    flag(
      "--iface-regex <re...>",
      "regex over interface names and IPv4/IPv6 addresses, if --iface matched nothing (JavaScript; a leading Go (?i) is the i flag); repeat for several",
    ).argParser(each),
  )
  .addOption(
    flag(
      "--public-ip <ip>",
      "IPv4 address peers send to (default: the interface's); IPv6-only wasm-vxlan: carry IPv6 over it",
    ),
  )
  .addOption(flag("--public-ipv6 <ip>", "IPv6 address peers send to when EnableIPv6 is on (default: the interface's)"))
  .addOption(
    flag("--subnet-file <path>", "where to write the subnet file for the CNI plugin").default(DEFAULT_SUBNET_FILE),
  )
  .addOption(toggle("ip-masq", "masquerade pod traffic leaving the pod network (nftables)"))
  .addOption(
    flag(
      "--healthz-ip <ip>",
      "address of the health endpoints (they say only whether the agent runs and is ready)",
    ).default("0.0.0.0"),
  )
  .addOption(
    intFlag(
      "--healthz-port <n>",
      "TCP port of /healthz and /readyz, 1..65535 (off unless set; 0 is off, as in flanneld)",
    ),
  )
  .addOption(
    toggle(
      "healthz-status",
      "also serve /status on --healthz-port: it shows members, underlay addresses and MACs, so only on a trusted network",
    ),
  )
  .addOption(
    flag(
      "--metrics-ip <ip>",
      "address of /metrics (default loopback: metrics name peers and subnets; pass 0.0.0.0 for a remote scraper)",
    ).default("127.0.0.1"),
  )
  .addOption(
    intFlag(
      "--metrics-port <n>",
      "TCP port of Prometheus /metrics, 1..65535 (off unless set; 0 is off, as --healthz-port's)",
    ),
  )
  .addOption(intFlag("--gossip-port <n>", "UDP and TCP port of the gossip control plane, 1..65535").default(7946))
  .addOption(
    flag(
      "--join <host:port,...>",
      "gossip addresses of nodes to join, retried until one answers (host may be a DNS name); none starts a new cluster",
    )
      .argParser(list)
      .default([]),
  )
  .addOption(
    flag(
      "--subnet-seeds <name,...>",
      "initial owners of the subnet space, the same list on each of them (default: this node when --join is empty)",
    ).argParser(list),
  )
  .addOption(
    flag(
      "--key-file <path>",
      "cluster key file: the same on every node (base64 32-byte keys, one a line, primary first; read again on SIGHUP; `weft keygen` makes one for a new cluster)",
    ).makeOptionMandatory(),
  )
  .addOption(
    flag(
      "--state-dir <dir>",
      "state kept across restarts (lease ring, VTEP MAC, members.json, underlay-ipv6), the lock weft.lock and the socket weft.sock",
    ).default("/var/lib/weft"),
  )
  .addOption(flag("--node-name <name>", "this node's name in the cluster (default: hostname)"))
  .addOption(
    toggle(
      "keep-on-exit",
      "leave devices, routes and FDB entries in place on exit (zero-downtime restarts, as flannel)",
    ),
  )
  .addOption(intFlag("--reconcile-interval <s>", "seconds between kernel drift repairs, at least 1").default(5))
  .action(async (o) => {
    // Asynchronous until a stop begins (or the process exits), synchronous from then on: see agent-log.ts.
    const out = new AgentLogStream(1, (dropped) =>
      log.warn(
        { code: "CLI_LOG_LINES_DROPPED", dropped },
        `${dropped} log lines were dropped before this one: stdout took none while 1 MiB of them waited, its reader was gone, or while stopping another write error (weft_log_lines_dropped_total counts them); have stdout read, or keep the log elsewhere`,
      ),
    );
    process.once("exit", () => out.atExit());
    const log = pino({ base: { node: o.nodeName } }, out);
    for (const { variable, advice } of ignoredFlanneldEnv(process.env))
      log.warn({ code: "CLI_FLANNELD_ENV_IGNORED", variable }, `${variable} is ignored: ${advice}`);
    for (const { variable, shadowedBy } of agentCommand.flanneldShadowed)
      log.warn(
        { code: "CLI_FLANNELD_ENV_IGNORED", variable, shadowedBy },
        `${variable} is ignored: ${shadowedBy} is set to another value, and wins; unset one of them (weft's manifest and unit set some WEFT_ variables)`,
      );
    const opts: AgentOptions = {
      netConfig: o.netConfigPath ?? o.netConfig,
      iface: o.iface,
      ifaceRegex: o.ifaceRegex,
      publicIp: o.publicIp,
      publicIpv6: o.publicIpv6,
      subnetFile: o.subnetFile,
      ipMasq: o.ipMasq,
      healthzIp: o.healthzIp,
      // flanneld's 0, "no health server": the TCP listener only repeats what weft.sock serves.
      healthzPort: o.healthzPort || undefined,
      healthzStatus: o.healthzStatus,
      metricsIp: o.metricsIp,
      // 0 as --healthz-port's: a template can turn it off without dropping the variable.
      metricsPort: o.metricsPort || undefined,
      gossipPort: o.gossipPort,
      join: (o.join as string[]).map(parseHostPort),
      seeds: o.subnetSeeds,
      keyFile: o.keyFile,
      stateDir: o.stateDir,
      nodeName: o.nodeName ?? (await import("node:os")).hostname(),
      keepOnExit: o.keepOnExit,
      reconcileIntervalMs: o.reconcileInterval * 1000,
      logLinesDropped: () => out.dropped,
    };
    // SIGHUP's default action ends the process: catch it from the start, since starting can wait
    // long for a lease or a join. The key file is read again at once: wrong keys are what keeps
    // a node from joining, so the start may wait for nothing but them. net-conf.json is read
    // again once started (the config read at start may be older).
    const keys = new AgentKeys(opts.keyFile, log);
    let reloadWanted = false;
    const onEarlyHup = () => {
      keys.reload();
      reloadWanted = true;
      log.info("SIGHUP while starting: the key file is read again now, net-conf.json once the agent is ready");
    };
    process.on("SIGHUP", onEarlyHup);
    // SIGTERM and SIGINT are caught from the start too: while starting they abort the start, which
    // undoes what it did (weft.sock, the lock, the gossip port) like a stop once running.
    const starting = new AbortController();
    let agent: Agent | undefined;
    let stopping = false;
    let sigints = 0;
    const stop = async (signal: string) => {
      if (signal === "SIGINT") sigints++;
      if (stopping) {
        // SIGTERM is sent once by systemd and the kubelet, then SIGKILL: it never cuts a stop short.
        // A second Ctrl-C does, for a stop that hangs (a wedged ip call); a first one during a
        // stop that SIGTERM or a fatal error began waits like SIGTERM.
        if (sigints < 2)
          return log.warn(
            { code: "CLI_STOP_IN_PROGRESS", signal },
            "a stop is in progress; waiting for it (a second SIGINT exits at once)",
          );
        log.error(
          { code: "CLI_STOP_ABANDONED", signal },
          "exiting before the stop ended: devices, routes, ip-masq rules or subnet.env may be left, and no leave may have been sent; the next start with the same config takes them over, or remove them by hand (ip link show, ip route show, nft list tables)",
        );
        // Ended by SIGINT's default action, as Ctrl-C ends a program: process.exit would wait for a
        // file-system call that hangs (a wedged mount) in libuv's thread pool. No write's callback
        // runs after the kill: atExit writes the lines above that would wait for one.
        out.atExit();
        process.removeAllListeners("SIGINT");
        return process.kill(process.pid, "SIGINT");
      }
      stopping = true;
      out.toSync();
      log.info({ signal }, "stopping");
      if (!agent) return starting.abort();
      await stopAndExit(agent);
    };
    // AGENT_STOP_INCOMPLETE says what is left to remove by hand: logged before the exit.
    const stopFailed = (err: Error) => log.error({ err, code: (err as { code?: string }).code }, err.message);
    // A fatal error during a signal's stop (the name found taken while gossip stopped) gets the same
    // stop: its exit 1 stands, as when it came first.
    let fatalSeen = false;
    let underlayChanged = false;
    const stopAndExit = (a: Agent) =>
      a.stop(true).then(
        () => process.exit(fatalSeen ? 1 : underlayChanged ? EXIT_UNDERLAY_CHANGED : 0),
        (err: Error) => {
          stopFailed(err);
          process.exit(1);
        },
      );
    process.on("SIGTERM", () => void stop("SIGTERM"));
    process.on("SIGINT", () => void stop("SIGINT"));
    try {
      agent = await Agent.start(opts, log, keys, starting.signal);
    } catch (err) {
      if (!isWeftError(err, "AGENT_STOPPED")) throw err;
      log.info("stopped while starting; nothing left behind");
      process.exit(0);
    }
    const running = agent;
    // Its name taken by a live node elsewhere: stop without a leave (a leave in this name would
    // tell the cluster that the other node left) and exit 1.
    // A signal meanwhile waits for this stop (stopping), as a second stop would have cut it short.
    running.onFatal(() => {
      fatalSeen = true;
      stopping = true;
      out.toSync();
      void running
        .stop(false)
        .catch(stopFailed)
        .finally(() => process.exit(1));
    });
    // Its underlay address changed: a stop as on SIGTERM, then an exit its supervisor restarts it after.
    running.onUnderlayChanged(() => {
      if (stopping) return; // a signal's or a fatal stop, under way, exits as it would
      underlayChanged = true;
      stopping = true;
      out.toSync();
      void stopAndExit(running);
    });
    if (stopping) {
      // The signal came after the start's last check: stop as if it had come a moment later.
      await stopAndExit(running);
    }
    process.removeListener("SIGHUP", onEarlyHup);
    const reloadNetConf = () =>
      void running.reload().catch((err) =>
        isWeftError(err, "AGENT_ROLLBACK_FAILED")
          ? log.error({ err, code: err.code }, "reload failed, and the backend in force before could not be restored")
          : isWeftError(err, "AGENT_SWAP_STOP_FAILED")
            ? log.error({ err, code: err.code }, "reload failed: the running backend could not be stopped")
            : log.error(
                // A weft error's own code (CONFIG_NET_CONF_INVALID...); a system error's stays in `err`.
                { err, code: err instanceof WeftError ? err.code : "AGENT_RELOAD_FAILED" },
                "reload failed; keeping the running config: fix what err says (net-conf.json, or the new backend's start) and send SIGHUP again",
              ),
      );
    process.on("SIGHUP", () => {
      keys.reload();
      reloadNetConf();
    });
    if (reloadWanted) reloadNetConf();
  });

program
  .command("status")
  .description("show a running agent's node, lease, peers and counters")
  .addOption(flag("--state-dir <dir>", "the agent's state dir").default("/var/lib/weft"))
  .action(async (o) => {
    process.stdout.write(JSON.stringify(await agentRequest(o.stateDir, "GET", "/status"), null, 2) + "\n");
  });

program
  .command("reclaim")
  .description(
    "hand a dead node's subnets back to the ring now, instead of after the grace period (only for a node gone for good)",
  )
  .argument("<node>", "name of the dead node")
  .addOption(flag("--state-dir <dir>", "state dir of a running agent of the cluster").default("/var/lib/weft"))
  .action(async (node: string, o) => {
    const report = await agentRequest(o.stateDir, "POST", `/reclaim?node=${encodeURIComponent(node)}`);
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  });

program
  .command("keygen")
  .description("write a new cluster key file (give the same file to every node)")
  .argument("<path>", "key file to create")
  .option(
    "--check",
    "write nothing: read the key file at <path> as this version's agent reads it, and say what is wrong (before an upgrade)",
  )
  .action(async (path: string, o: { check?: boolean }) => {
    if (o.check) {
      // The agent's own keyring (AgentKeys.load): a key listed twice is one key, ids that collide refused.
      const { primary, installed } = (await Keyring.fromKeyFile(path)).ids();
      process.stdout.write(
        `${path}: ${installed.length} key${installed.length === 1 ? "" : "s"} (ids ${installed.join(", ")}; ${primary} seals), as this weft reads it\n`,
      );
      return;
    }
    // The first step on a fresh host: /etc/weft may not exist yet (systemd makes it at the first
    // start), so it is made, owner-only.
    try {
      // Whole or not at all (a crash or a full disk must not leave a cut key that a second keygen
      // would refuse to replace), and never over a file: linked into place.
      await writeFileAtomic(path, randomBytes(KEY_BYTES).toString("base64") + "\n", {
        mode: 0o600,
        dirMode: 0o700,
        exclusive: true,
      });
    } catch (cause) {
      // Never over a file: it may be the key a cluster runs with.
      throw (cause as NodeJS.ErrnoException).code === "EEXIST"
        ? new WeftError(
            "CLI_KEY_FILE_EXISTS",
            `${path} exists; weft keygen never overwrites a file (it may be a running cluster's key): give another path, or remove it first if no cluster uses it`,
            { cause },
          )
        : new WeftError(
            "CLI_KEY_FILE_UNWRITABLE",
            `cannot write ${path} (${errorMessage(cause)}); run as root, or give a path in a directory you may create and write`,
            { cause },
          );
    }
    process.stdout.write(`wrote ${path}\n`);
  });

program
  .command("config-reference")
  .description("print every net-conf.json key with its meaning")
  .action(() => {
    process.stdout.write(configReference() + "\n");
  });

program
  .command("cni")
  .description(
    "the CNI plugin, compatible with flannel's: run by a container runtime (CNI_* in the environment, network config on stdin, result on stdout)",
  )
  .action(async () => {
    // Loaded here: a runtime starts one process per pod operation, so the agent's modules stay out.
    const { cniMain } = await import("../cni/main.js");
    process.exitCode = await cniMain();
  });

program
  .command("install-cni")
  .description(
    "put the CNI plugin on CNI's path under the type name `flannel` (a launcher running this installation's `weft cni`)",
  )
  .option("--bin-dir <dir>", "CNI's plugin directory", "/opt/cni/bin")
  .option("--name <type>", "the plugin type the network config names", "flannel")
  .option(
    "--bundle",
    "also copy Node.js and the plugin's files beside it, for hosts without Node.js (Kubernetes nodes)",
    false,
  )
  .action(async (o) => {
    const { installPlugin } = await import("../cni/install.js");
    process.stdout.write(`installed ${await installPlugin(o.binDir, { name: o.name, bundle: o.bundle })}\n`);
  });

program
  .command("demo")
  .description("a three-host cluster in network namespaces on this machine, with pods and a live view (root)")
  .addOption(
    new Option("--backend <type>", "backend for all hosts (default wasm-vxlan)").choices([
      "vxlan",
      "host-gw",
      "udp",
      "wasm-vxlan",
    ]),
  )
  .option(
    "--dual-stack",
    "IPv6 too: an IPv6 underlay (2001:2::/64), pods in 2001:2:0:8000::/49, pings over both families (backends vxlan, host-gw, wasm-vxlan)",
    false,
  )
  .option("--once", "build, check and tear down without the live view (for scripts)", false)
  .action(async (o) => runDemo({ backend: o.backend ?? "wasm-vxlan", once: o.once, dualStack: o.dualStack }));

program
  .command("bench")
  .description(
    "benchmark the backends against kernel vxlan on this machine (two hosts in namespaces, real agents, iperf3, ping) and write a report (root)",
  )
  .option(
    "--backends <list>",
    "backends to compare, vxlan (the baseline) among them (default vxlan,host-gw,wasm-vxlan,udp)",
    list,
  )
  .option(
    "--offloads <list>",
    "segmentation offloads of the userspace backends (wasm-vxlan, udp): on, off, or on,off to measure each both ways (default on)",
    list,
  )
  .option(
    "--family <list>",
    "address families of the pod traffic: 4, or 4,6 to add TCP over IPv6 for the backends that carry it (vxlan, host-gw, wasm-vxlan), each in an IPv6-only lab of its own (default 4)",
    list,
  )
  .option("--duration <s>", "seconds per iperf3 run (default 10; --quick 1)", int("--duration"))
  .option("--streams <list>", "TCP runs with these stream counts (default 1,4)", (v: string) =>
    v.split(",").filter(Boolean).map(int("--streams")),
  )
  .option("--rounds <n>", "rounds; each runs every workload on every setup (default 3; --quick 1)", int("--rounds"))
  .option("--out <dir>", "report directory (default bench/results/<start time>-<pid>, under the current directory)")
  .option("--quick", "a smoke run in under 2 minutes: 1 s runs, 1 round, short microbenchmarks", false)
  .action(async (o) => {
    // Loaded here: the agent never needs the benchmark's modules.
    const { runBench } = await import("../bench/run.js");
    const { resolveSettings } = await import("../bench/settings.js");
    await runBench(resolveSettings(o), ["weft", ...process.argv.slice(2)].join(" "));
  });

function parseHostPort(s: string): { host: string; port: number } {
  // An IPv6 host is written in brackets, as in URLs: [2001:2::1]:7946.
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(s) ?? /^([^:[\]]+):(\d+)$/.exec(s);
  if (!m)
    throw new WeftError(
      "CLI_BAD_ADDRESS",
      `--join "${s}": not host:port (like 198.18.0.2:7946, or [2001:2::1]:7946 for IPv6)`,
    );
  return { host: m[1], port: Number(m[2]) };
}

/** Commander's own refusals, each as a weft code with what to do (commander printed a bare "error: ..."). */
const USAGE_ERRORS: Record<string, { code: CliErrorCode; advice: (command: string) => string }> = {
  "commander.missingMandatoryOptionValue": {
    code: "CLI_MISSING_OPTION",
    advice: (c) => `give it, or its variable (\`${c} --help\` names both)`,
  },
  "commander.optionMissingArgument": {
    code: "CLI_MISSING_ARGUMENT",
    advice: (c) => `give the flag its value (\`${c} --help\` says what it takes)`,
  },
  "commander.missingArgument": {
    code: "CLI_MISSING_ARGUMENT",
    advice: (c) => `give it (\`${c} --help\` says what it is)`,
  },
  "commander.unknownOption": {
    code: "CLI_UNKNOWN_OPTION",
    advice: (c) => `\`${c} --help\` lists the flags it takes`,
  },
  "commander.unknownCommand": { code: "CLI_UNKNOWN_COMMAND", advice: () => "`weft --help` lists the commands" },
  "commander.excessArguments": {
    code: "CLI_EXCESS_ARGUMENTS",
    advice: (c) => `drop the extra ones, or quote a value holding spaces (\`${c} --help\` shows what it takes)`,
  },
  "commander.invalidArgument": { code: "CLI_BAD_CHOICE", advice: () => "give one of those" },
};
// Every command exits through here, so that a bad command line gets one `weft: [CODE]` line like
// any other error; help and --version print and exit as commander would (0, or 1 for bare `weft`'s help).
for (const command of [program, ...program.commands]) {
  const name = command === program ? "weft" : `weft ${command.name()}`;
  command.configureOutput({ outputError: () => {} }).exitOverride((err) => {
    const usage = USAGE_ERRORS[err.code];
    if (!usage) {
      if (["commander.help", "commander.helpDisplayed", "commander.version"].includes(err.code))
        process.exit(err.exitCode);
      throw err;
    }
    // Commander's text on one line (its "Did you mean" is on a second), without its "error: ".
    const what = err.message
      .replace(/^error: /, "")
      .replace(/\.$/, "")
      .replace(/\n/g, " ");
    throw new WeftError(usage.code, `${what}: ${usage.advice(name)}`, { cause: err });
  });
}
dropEmptyEnv(process.env, [program, ...program.commands]);

program.parseAsync().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`weft: ${e.code ? `[${e.code}] ` : ""}${e.message ?? String(err)}\n`);
  process.exit(1);
});
