// flanneld's command line and environment, for users moving a unit or a DaemonSet over. flanneld
// reads Go-style flags (-iface or --iface) and, for a flag not given, FLANNELD_<FLAG>. weft keeps
// the names of the flags it shares and reads WEFT_<FLAG> the same way, so FLANNELD_<FLAG> of a
// shared flag is taken as its WEFT_<FLAG> (which wins if both are set); flanneld's other flags
// are refused with what to do instead, and their variables are logged as ignored.
import { isDeepStrictEqual } from "node:util";
import type { Command, Option } from "commander";
import { WeftError } from "../errors.js";

const GOSSIP =
  "weft leases node subnets by gossip among its agents: drop it, and give --join (a few nodes' gossip addresses) and --subnet-seeds (their node names)";
const KUBE = `weft never talks to the Kubernetes API server; ${GOSSIP}, and set SubnetLen (IPv6SubnetLen) in net-conf.json to kube-controller-manager's --node-cidr-mask-size(-ipv4/-ipv6)`;
const ETCD = `weft needs no etcd; ${GOSSIP}, and --net-config a file holding the net-conf.json kept at <etcd-prefix>/config`;
const LOG = "weft logs JSON lines at info level and has no verbosity flag: drop it";

/** Flags sharing one piece of advice. */
const sharedAdvice = (flags: string[], none: string) => Object.fromEntries(flags.map((f) => [f, { none }]));

/**
 * flanneld's flags (main.go, klog's copied ones too), each with the weft flag it is or, if none,
 * what to do instead. A weft flag must be one of `weft agent`'s with a variable: sharedOptions
 * says which is not at every start, and test/cli/flanneld.test.ts walks them.
 */
export const FLANNELD_FLAGS: Record<string, { weft: string; unset?: string } | { none: string }> = {
  ...Object.fromEntries(
    ["iface", "iface-regex", "public-ip", "public-ipv6", "subnet-file", "ip-masq", "healthz-ip"].map((f) => [
      f,
      { weft: `--${f}` },
    ]),
  ),
  // flanneld's default, "no health server", as weft's 0 and the flag left out.
  "healthz-port": { weft: "--healthz-port", unset: "0" },
  "net-config-path": { weft: "--net-config" },
  ...sharedAdvice(["kube-subnet-mgr", "kube-api-url", "kubeconfig-file", "kube-annotation-prefix"], KUBE),
  ...sharedAdvice(
    ["etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile", "etcd-username", "etcd-password"],
    ETCD,
  ),
  ...sharedAdvice(["v", "vmodule", "log_backtrace_at"], LOG),
  "set-node-network-unavailable": {
    none: "weft never talks to the Kubernetes API server, so it sets no Node condition: drop it (README: Kubernetes, switching from flannel)",
  },
  "subnet-lease-renew-margin": {
    none: "weft's leases are never renewed: a node keeps its subnet while it lives and for the reclaim grace (24 hours) after it is declared dead (`weft reclaim` hands it back sooner); drop it",
  },
  "iface-can-reach": {
    none: "weft has no route lookup for the underlay: pass --iface with the interface `ip route get <that address>` names (or its address)",
  },
  "iptables-forward-rules": {
    none: "weft writes no FORWARD rules: drop it, and where the FORWARD policy is DROP allow the pod network there yourself",
  },
  "iptables-resync": {
    none: "weft's --ip-masq rules live in an nftables table of its own (weft), not in iptables: drop it",
  },
  "ip-masq-fully-random-disable": {
    none: "weft's --ip-masq always masquerades fully-random, with no way to turn it off: drop it",
  },
  "use-multi-cluster-cidr": {
    none: "weft never talks to the Kubernetes API server, so it reads no ClusterCIDR objects: drop it, and give the pod network as Network (and IPv6Network) in net-conf.json",
  },
  "persistent-mac": {
    none: "weft keeps the VTEP MAC in --state-dir, across restarts and reboots while that directory stays: drop it",
  },
  "ip-blackhole-route": {
    none: "weft adds no blackhole route for the node's subnet: drop it, and add one yourself if the node's pods are not on its CNI bridge (ip route add blackhole <FLANNEL_SUBNET's network>)",
  },
};

/** `--name=value` or `-name`: the flag's name, or undefined for anything else (a value). */
function flagName(token: string): { name: string; dashes: number } | undefined {
  const m = /^(--?)([A-Za-z][\w-]*)(=|$)/.exec(token);
  return m ? { name: m[2], dashes: m[1].length } : undefined;
}

/**
 * Refuses flanneld's flags among the options `agent` does not know (commander's `unknown`, from the
 * first unknown one on), each with what to do; flags it does not recognize are left to commander.
 */
export function refuseFlanneldFlags(unknown: readonly string[], agent: Command): void {
  const long = new Set(agent.options.map((o) => o.long));
  // Flags by advice, each once: the etcd ones share theirs. Names only, never a value (a password).
  const refused = new Map<string, Set<string>>();
  const refuse = (advice: string, flag: string) => refused.set(advice, (refused.get(advice) ?? new Set()).add(flag));
  for (const token of unknown) {
    const f = flagName(token);
    if (!f) continue;
    const known = FLANNELD_FLAGS[f.name];
    const flag = `${"-".repeat(f.dashes)}${f.name}`;
    if (known && "none" in known) refuse(`(flanneld's): ${known.none}`, flag);
    else if (f.dashes === 1 && long.has(`-${flag}`))
      refuse(`(Go-style): weft's flags take two dashes, write -${flag}`, flag);
  }
  if (refused.size > 0)
    throw new WeftError(
      "CLI_FLANNELD_FLAG",
      [...refused].map(([advice, flags]) => `${[...flags].join(", ")} ${advice}`).join("; "),
    );
}

/** `--net-config` or `net-config`'s variable: <prefix>_NET_CONFIG. */
export const envName = (prefix: string, flag: string) =>
  `${prefix}_${flag.replace(/^--/, "").replace(/-/g, "_").toUpperCase()}`;

/**
 * Unsets each empty variable of `commands`' flags (WEFT_<FLAG>), as flanneld takes an empty
 * FLANNELD_<FLAG> as unset: a template leaving one blank means the default, not a value to refuse.
 */
export function dropEmptyEnv(env: NodeJS.ProcessEnv, commands: readonly Command[]): void {
  for (const option of commands.flatMap((c) => c.options))
    if (option.envVar && env[option.envVar] === "") delete env[option.envVar];
}

/** WEFT_<FLAG> variables taken from FLANNELD_<FLAG>, by name: errors about their value name what the user set. */
const adopted = new Map<string, string>();

/** The variable a WEFT_<FLAG> value came from: FLANNELD_<FLAG> where adoptFlanneldEnv took it from there. */
export const envSource = (weftVariable: string) => adopted.get(weftVariable) ?? weftVariable;

/** Whether `option` reads two values as one ("1" and "true" of a switch, "05" and "5" of a number); a value it refuses is only itself. */
function sameValue(option: Option, a: string, b: string): boolean {
  if (a === b) return true;
  if (!option.parseArg) return false;
  try {
    return isDeepStrictEqual(option.parseArg(a, undefined), option.parseArg(b, undefined));
  } catch {
    return false;
  }
}

/**
 * The flags weft shares with flanneld, each with `agent`'s option and its variable; a FLANNELD_FLAGS
 * entry naming none (a misspelt weft flag, one renamed) fails every start, whatever is set, rather
 * than only once someone sets its FLANNELD_<FLAG>.
 */
function sharedOptions(agent: Command) {
  return Object.entries(FLANNELD_FLAGS).flatMap(([name, flag]) => {
    if (!("weft" in flag)) return [];
    const option = agent.options.find((o) => o.long === flag.weft);
    if (!option?.envVar)
      throw new WeftError(
        "CLI_FLANNELD_TABLE",
        `flanneld's --${name} is taken as weft agent's ${flag.weft}, which ${option ? "reads no variable" : "does not exist"}: a bug of this build (FLANNELD_FLAGS in src/cli/flanneld.ts): report it, and run another release`,
      );
    return [{ name, flag, option, to: option.envVar }];
  });
}

/**
 * Takes FLANNELD_<FLAG> of each flag weft shares with flanneld as the variable of `agent`'s flag
 * (WEFT_<FLAG>), unless that is set; flanneld, too, takes an empty variable as unset. Returns the
 * FLANNELD_<FLAG> variables a WEFT_<FLAG> of another value shadowed (weft's manifests set some: a
 * migrated value would go unseen).
 */
export function adoptFlanneldEnv(
  env: NodeJS.ProcessEnv,
  agent: Command,
): Array<{ variable: string; shadowedBy: string }> {
  const shadowed: Array<{ variable: string; shadowedBy: string }> = [];
  for (const { name, flag, option, to } of sharedOptions(agent)) {
    const [from, value] = [envName("FLANNELD", name), env[envName("FLANNELD", name)]];
    if (!value) continue;
    // flanneld reads the value, so "00" is its unset 0 too.
    if (flag.unset !== undefined && sameValue(option, value, flag.unset)) continue;
    const set = env[to];
    if (set === undefined) {
      env[to] = value;
      adopted.set(to, from);
    } else if (!sameValue(option, set, value)) shadowed.push({ variable: from, shadowedBy: to });
  }
  return shadowed;
}

/** The FLANNELD_<FLAG> variables set for flanneld's flags weft has no equivalent of, each with what to do instead. */
export function ignoredFlanneldEnv(env: NodeJS.ProcessEnv): Array<{ variable: string; advice: string }> {
  return Object.entries(FLANNELD_FLAGS).flatMap(([name, flag]) =>
    "none" in flag && env[envName("FLANNELD", name)]
      ? [{ variable: envName("FLANNELD", name), advice: flag.none }]
      : [],
  );
}
