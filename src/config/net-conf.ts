// flannel's net-conf.json, as weft reads it: one zod schema that both validates and documents
// every key (the README's config reference is generated from the same descriptions by
// `weft config-reference`). Subnet semantics (defaults for SubnetLen/Min/Max and their IPv6*
// counterparts, and their limits) are flannel's, resolved by SubnetSpace and Ipv6SubnetSpace;
// backend keys per Type. The modes are flannel's: IPv4-only (the default), dual-stack
// (EnableIPv6) and IPv6-only (EnableIPv4 false, EnableIPv6 true).
//
// Keys match regardless of case and Backend.Type is lowercased, as in flannel (flannelKeys).
// Deliberate differences: flannel's code defaults a missing Backend to "udp" while its
// documentation says "vxlan"; weft defaults to vxlan, the documented and far faster choice. And an
// unknown top-level key is an error, where flannel ignores it, so that a typo cannot leave a
// default in force. Backend keys no backend reads are refused alike. Another backend's key (a
// ConfigMap switched from it keeps its keys) is ignored under flannel's Types, as flanneld's
// backends each read only their own, and the agent logs it (CONFIG_BACKEND_KEY_IGNORED); under
// weft's own Types, which no flanneld runs, it is refused (FLANNEL_TYPES).
import { z } from "zod";
import { BACKEND_TYPES, ipv6OverIpv4Port } from "../backends/backend.js";
import {
  DEFAULT_BUSY_POLL_US,
  DEFAULT_FLOW_QUEUE,
  DEFAULT_QUEUE_DELAY_US,
  DEFAULT_QUEUES_PER_WORKER,
  DEFAULT_WORKERS_RULE,
  MAX_WORKERS,
  TUN_MAX_QUEUES,
  WORKER_MAX_PAIRS,
  defaultWorkers,
} from "../dataplane/defaults.js";
import { Ipv6SubnetSpace, SubnetSpace } from "../control/lease/slots.js";
import { WeftError } from "../errors.js";
import { withKnownKeys } from "./keys.js";
import { formatPrefix, parseIpv4, parseMaskedPrefix } from "../net/ipv4.js";
import { formatPrefix6, parseIpv6, parseMaskedPrefix6 } from "../net/ipv6.js";

/**
 * A key where null is "not set": Go's encoding/json leaves a boolean, number or string field's
 * default on null, so flannel does, and templated configs write it. (Every such key, weft's own
 * too, and Network and IPv6Network, where flannel's address type refuses null: unset, a required
 * one is named as missing.)
 */
const nullIsDefault = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (v === null ? undefined : v), schema).describe(schema.description ?? "");

const port = (dflt: number, what: string, why: string) =>
  nullIsDefault(
    z
      .number()
      .int()
      .min(1, `not a port: 1..65535; leave Port out for the default ${dflt}`)
      .max(65535)
      .default(dflt)
      .describe(`UDP port of the ${what}, 1..65535 (default ${dflt}: ${why}); not the gossip, health or metrics port`),
  );
/** A VXLAN port: flannel passes 0 (its default) to the kernel, which takes 8472, so 0 is accepted as the default. */
const vxlanPort = (what: string, why: string) =>
  nullIsDefault(
    z
      .number()
      .int()
      .min(0)
      .max(65535)
      .default(8472)
      .transform((p) => p || 8472)
      .describe(
        `UDP port of the ${what}, 1..65535, or 0 for the default as in flannel (default 8472: ${why}); not the gossip, health or metrics port`,
      ),
  );
const vni = (device: string) =>
  nullIsDefault(
    z
      .number()
      .int()
      .min(0)
      .max(0xffffff)
      .default(1)
      .describe(`VXLAN network identifier, 0..16777215 (default 1); the device is ${device}`),
  );
const workers = nullIsDefault(
  z
    .number()
    .int()
    .min(1)
    .max(MAX_WORKERS)
    .optional()
    .describe(
      `dataplane worker threads, 1..${MAX_WORKERS}; default: ${DEFAULT_WORKERS_RULE}. ` +
        "A light flow (a ping, a request) waits for the batch its worker is serving; with more workers than bulk flows it usually has one to itself, " +
        "and an idle worker sleeps until a packet comes, at no cost",
    ),
);
const queuesPerWorker = nullIsDefault(
  z
    .number()
    .int()
    .min(1)
    .max(WORKER_MAX_PAIRS)
    .optional()
    .describe(
      `queue pairs (a TUN queue and the UDP socket beside it) each dataplane worker serves in turn, 1..${WORKER_MAX_PAIRS} (default ${DEFAULT_QUEUES_PER_WORKER}). ` +
        "Flows are spread over all pairs by one symmetric flow hash, in a steering program on the sockets and one on the TUN device (Linux ≥ 4.16, and `CAP_BPF` or `CAP_SYS_ADMIN`, which root has; without them the device keeps its own flow table, on which a one-way flow may move to another pair after 3 s), and both directions of a flow stay on one, so a flood fills its own pair's TUN ring and receive queue, " +
        "not those of the flows on other pairs, which wait for a round of its batches at most. " +
        `Workers × QueuesPerWorker is at most ${TUN_MAX_QUEUES} (the TUN driver's limit; without Workers, with the default worker count of this host)`,
    ),
);
const offloads = nullIsDefault(
  z
    .boolean()
    .default(true)
    .describe(
      "segmentation offloads (default true): TCP crosses the TUN device as 64 KB super-packets that the dataplane segments and coalesces, " +
        "received UDP as USO super-packets (Linux ≥ 6.2), and the sockets use UDP GSO/GRO, single datagrams of one flow to one peer leaving as GSO trains. Where the kernel lacks a feature (Linux < 5.0) they turn off by themselves, with a log line, " +
        "`weft_dataplane_offloads` 0 on /metrics and the reason under `offload` in `weft status`; false turns them off. The datagrams on the wire are the same either way",
    ),
);

// Optional rather than defaulted: the defaults live with the dataplane (dataplane.ts), which also
// serves the benchmarks and tests without a net-conf.json.
const busyPoll = nullIsDefault(
  z
    .number()
    .int()
    .min(0)
    .max(1000)
    .optional()
    .describe(
      `microseconds a dataplane worker keeps polling without sleeping after it moved packets, 0..1000 (default ${DEFAULT_BUSY_POLL_US}): ` +
        "a reply that comes within the budget costs no thread wake-up. A queue without traffic sleeps at once, so an idle agent uses no CPU for it; " +
        "while traffic flows each worker spends up to this much per quiet spell, yielding its core to any other runnable thread",
    ),
);
const queueDelay = nullIsDefault(
  z
    .number()
    .int()
    .min(0)
    .max(1_000_000)
    .optional()
    .describe(
      `longest wait of a datagram in a dataplane socket's receive queue, microseconds (default ${DEFAULT_QUEUE_DELAY_US}; 0: no limit). ` +
        "Once a queue has stood above it for 100 ms (full batches of late datagrams), late datagrams are dropped at its head until fresh ones come, and at once whenever it stands again within 1.6 s, as CoDel does (RFC 8289), " +
        "so latency under overload stays bounded while a thread that is merely late costs nothing; " +
        'counted in weft_dataplane_queue_drops_total{reason="queue-delay"}',
    ),
);

const flowQueue = nullIsDefault(
  z
    .boolean()
    .optional()
    .describe(
      `per-flow queues on a dataplane worker's send path (default ${DEFAULT_FLOW_QUEUE}): the worker reads its TUN queue faster than it sends, ` +
        "serves sparse flows (a ping, a request) before bulk ones, and drops a flood's excess at the head of the fattest flow instead of letting the TUN ring drop every flow's packets alike; " +
        "a TCP stream that shares its queue pair with a flood keeps moving instead of stalling, and a ping that shares it is rarely lost (flows meet on a pair one time in Workers × QueuesPerWorker); " +
        "with it each TUN queue holds 1,024 packets, without it 32 (a flood then fills the ring and its tail drops hit every flow in it); " +
        "it costs a single TCP stream about 4% more CPU per GB in the benchmarks (none measured for four); " +
        'counted in weft_dataplane_queue_drops_total{reason="flow-queue"}',
    ),
);

/** The userspace dataplane's tuning keys, which both its formats (udp, wasm-vxlan) take. */
const userspaceTuning = {
  Workers: workers,
  QueuesPerWorker: queuesPerWorker,
  Offloads: offloads,
  BusyPollMicros: busyPoll,
  QueueDelayMicros: queueDelay,
  FlowQueue: flowQueue,
};

/**
 * The Types flanneld has. Under them a Backend key the Type does not read is ignored, as
 * flanneld's backend ignores it. Under weft's own (wasm-vxlan) no flanneld shares the config, so
 * such a key is refused: a setting made for the Type before (vxlan's DirectRouting) would lapse unseen.
 */
const FLANNEL_TYPES: ReadonlySet<string> = new Set(["vxlan", "host-gw", "udp"]);

/**
 * Backend keys of flannel's backends weft lacks (pkg/backend, and the cloud ones of its older
 * releases), which a ConfigMap switched from one keeps: another backend's keys, not typos.
 */
const FLANNEL_ONLY_KEYS: Readonly<Record<string, readonly string[]>> = {
  wireguard: ["ListenPort", "ListenPortV6", "PSK", "PersistentKeepaliveInterval", "Mode", "MTU"],
  ipsec: ["PSK", "UDPEncap", "ESPProposal"],
  ipip: ["DirectRouting"],
  extension: ["PreStartupCommand", "PostStartupCommand", "SubnetAddCommand", "SubnetRemoveCommand"],
  "tencent-vpc": ["AccessKeyID", "AccessKeySecret"],
  "ali-vpc": ["AccessKeyID", "AccessKeySecret"],
  "aws-vpc": ["RouteTableID"],
};

/** Keys of flannel's Windows backends, which a ConfigMap shared with Windows nodes carries (its
 *  Helm chart writes MacPrefix); flanneld on Linux ignores them, and so does weft. */
const WINDOWS_ONLY = new Set(["MacPrefix", "Name", "DNSServerList"]);
/** A Windows-only key regardless of case, as keys match (one its Type lacks keeps the case given). */
const isWindowsOnly = (key: string) => [...WINDOWS_ONLY].some((k) => k.toLowerCase() === key.toLowerCase());
const windowsOnly = (what: string) =>
  nullIsDefault(
    z
      .string()
      .optional()
      .describe(`${what} on flannel's Windows nodes; accepted and ignored here, as flanneld on Linux does`),
  );

/** flannel's vxlan MTU key; wasm-vxlan takes it too, so a ConfigMap switched to it keeps the pods' MTU. */
const underlayMtu = nullIsDefault(
  z
    .number()
    .int()
    .min(576, "too small: the MTU is at least 576; leave MTU out for the default, the interface's")
    .max(65535)
    .optional()
    .describe(
      "the underlay MTU to assume instead of the interface's, as flannel; at most the interface's, which bounds the encapsulated packets (a larger one is logged and capped); the 50 bytes of encapsulation are subtracted for pods",
    ),
);

const vxlan = z
  .object({
    Type: z.literal("vxlan"),
    MacPrefix: windowsOnly("the VTEP MAC prefix"),
    Name: windowsOnly("the HNS network's name"),
    VNI: vni("flannel.<VNI>"),
    Port: vxlanPort("VXLAN socket", "the Linux default, as in flannel"),
    MTU: underlayMtu,
    DirectRouting: nullIsDefault(
      z
        .boolean()
        .default(false)
        .describe("peers on the same L2 network get a plain route via their underlay address instead of VXLAN"),
    ),
    GBP: nullIsDefault(
      z.boolean().default(false).describe("VXLAN Group Based Policy extension (the kernel device's gbp flag)"),
    ),
    Learning: nullIsDefault(
      z
        .boolean()
        .default(false)
        .describe(
          "the kernel device's learning flag, as flannel (default false: nolearning, every peer comes from weft's permanent FDB entries); true lets the kernel also learn peers' MACs from the packets it receives",
        ),
    ),
  })
  .strict();

const hostGw = z
  .object({
    Type: z.literal("host-gw"),
    Name: windowsOnly("the HNS network's name"),
    DNSServerList: windowsOnly("the DNS servers of the HNS network"),
  })
  .strict();

const udp = z
  .object({
    Type: z.literal("udp"),
    Port: port(8285, "flannel udp wire format", "flannel's"),
    ...userspaceTuning,
  })
  .strict();

const wasmVxlan = z
  .object({
    Type: z.literal("wasm-vxlan"),
    VNI: vni("weft.<VNI> (a TUN device)"),
    Port: vxlanPort("VXLAN socket", "where kernel vxlan peers send"),
    MTU: underlayMtu,
    IPv6OverIPv4Port: nullIsDefault(
      z
        .number()
        .int()
        .min(1)
        .max(65535)
        .optional()
        .describe(
          "UDP port of the IPv6 dataplane (weft-v6.<VNI>) where IPv6 rides the IPv4 underlay (a node without an IPv6 underlay address, or IPv6-only with --public-ip), 1..65535 and not Port " +
            "(default Port + 1: in dual-stack the IPv4 dataplane holds Port on the same address, and one socket group cannot be split by inner family); every such node announces it, so nodes may differ. " +
            "Unused over an IPv6 underlay, which takes Port; not the gossip, health or metrics port",
        ),
    ),
    ...userspaceTuning,
  })
  .strict()
  // The default follows Port; resolved here so that the config in force (weft status) shows it.
  .overwrite((b) =>
    b.IPv6OverIPv4Port === undefined && b.Port < 65535 ? { ...b, IPv6OverIPv4Port: ipv6OverIpv4Port(b.Port) } : b,
  );

export const backendSchema = z.discriminatedUnion("Type", [vxlan, hostGw, udp, wasmVxlan]);
export type BackendConfig = z.infer<typeof backendSchema>;

/**
 * The Backend in force: with the userspace dataplane's defaults, which the schema leaves to the
 * dataplane, filled in (on this host: the worker count depends on its cores) and keys in one
 * order. `weft status` shows it, and a reload whose Backend is the same in force (an explicit
 * default written out) swaps nothing.
 */
export function backendInForce(b: BackendConfig): BackendConfig {
  const full =
    b.Type === "udp" || b.Type === "wasm-vxlan"
      ? {
          ...b,
          Workers: b.Workers ?? defaultWorkers(),
          QueuesPerWorker: b.QueuesPerWorker ?? DEFAULT_QUEUES_PER_WORKER,
          BusyPollMicros: b.BusyPollMicros ?? DEFAULT_BUSY_POLL_US,
          QueueDelayMicros: b.QueueDelayMicros ?? DEFAULT_QUEUE_DELAY_US,
          FlowQueue: b.FlowQueue ?? DEFAULT_FLOW_QUEUE,
        }
      : b;
  const { Type, ...rest } = full;
  return {
    Type,
    ...Object.fromEntries(
      Object.entries(rest)
        .filter(([k]) => !WINDOWS_ONLY.has(k)) // ignored, so not in force (and no reason to swap)
        .sort(([x], [y]) => (x < y ? -1 : 1)),
    ),
  } as BackendConfig;
}

/** A transform to what `parse` returns that reports what it throws as the key's issue. */
const parsedWith =
  <T>(parse: (v: string) => T) =>
  (v: string, ctx: z.RefinementCtx): T => {
    try {
      return parse(v);
    } catch (e) {
      ctx.addIssue({ code: "custom", message: (e as Error).message });
      return z.NEVER;
    }
  };
/** A refinement that reports what `parse` throws as the key's issue. */
const refineWith =
  (parse: (v: string) => unknown) =>
  (v: string, ctx: z.RefinementCtx): void => {
    parsedWith(parse)(v, ctx);
  };
const ipv4Address = refineWith(parseIpv4);
const ipv6Address = refineWith(parseIpv6);

/** Deeper nesting than this is no net-conf.json (it has two levels) and is refused before parsing. */
export const MAX_JSON_DEPTH = 16;
/** How much of an offending value an error quotes. */
const EXCERPT_CHARS = 80;

/** At most EXCERPT_CHARS of a value's JSON, so a huge file never becomes a huge error line. */
function excerpt(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length <= EXCERPT_CHARS ? text : `${text.slice(0, EXCERPT_CHARS)}… (${text.length} characters)`;
}

/** Deepest bracket nesting outside strings, counted without recursion. */
function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) max = Math.max(max, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

/** Backends whose wire format or kernel device carries IPv6 pod traffic. */
export const IPV6_BACKENDS: readonly string[] = ["vxlan", "host-gw", "wasm-vxlan"];
const NO_IPV6_BECAUSE: Record<string, string> = {
  udp: "flannel's udp wire format carries IPv4 packets only",
};

/**
 * A CIDR key, written back as its network: flannel's net.ParseCIDR clears host bits. Checked here,
 * not only by the subnet space, so that the error names the key like every other one.
 */
const cidr = (network: (v: string) => string, what: string) =>
  nullIsDefault(
    z.string().transform(parsedWith(network)).optional().describe(`${what} (null: unset, which flannel refuses)`),
  );

/** Whether `v` is an address that `parse` reads as zero, in any spelling ("0::0" is "::"). */
const parsesToZero =
  (parse: (v: string) => number | bigint) =>
  (v: unknown): boolean => {
    try {
      return typeof v === "string" && BigInt(parse(v)) === 0n;
    } catch {
      return false; // not an address: the schema says so
    }
  };

/**
 * flannel reads a zero value (0, 0.0.0.0, ::) as "not set" and applies the default
 * (CheckNetworkConfig); templated configs write them. null too: Go's encoding/json leaves the
 * default on null, except in SubnetMin and SubnetMax, whose type refuses it (`nullInFlannel`).
 */
const unsetIf = <T extends z.ZodType>(
  zero: string,
  isZero: (v: unknown) => boolean,
  nullInFlannel: boolean,
  schema: T,
) =>
  z
    .preprocess((v) => (v === null || isZero(v) ? undefined : v), schema)
    .describe(
      `${schema.description} (${zero}${nullInFlannel ? " or null: the default, as in flannel" : ": the default, as in flannel; null too, which flannel refuses"})`,
    );
const isZeroNumber = (v: unknown) => v === 0;

export const netConfSchema = z
  .object({
    Network: cidr(
      (v) => formatPrefix(parseMaskedPrefix(v)),
      "the pod network as IPv4 CIDR, e.g. 10.244.0.0/16; every node leases one subnet of it (required unless EnableIPv4 is false). Host bits are cleared, as in flannel (10.244.1.0/16 is 10.244.0.0/16). It must not contain the underlay address or overlap the host's other addresses and routes (checked at start)",
    ),
    SubnetLen: unsetIf(
      "0",
      isZeroNumber,
      true,
      z
        .number()
        .int()
        .optional()
        .describe(
          "prefix length of each node's subnet, at most 30 and at least Network + 2 (a Network of /28 or larger); default 24 (for Networks of /22 and larger), else Network + 2",
        ),
    ),
    SubnetMin: unsetIf(
      "0.0.0.0",
      parsesToZero(parseIpv4),
      false,
      z
        .string()
        .superRefine(ipv4Address)
        .optional()
        .describe(
          "first subnet that may be leased (its IPv4 network address); default: the second subnet (flannel skips the first)",
        ),
    ),
    SubnetMax: unsetIf(
      "0.0.0.0",
      parsesToZero(parseIpv4),
      false,
      z
        .string()
        .superRefine(ipv4Address)
        .optional()
        .describe("last subnet that may be leased (its IPv4 network address); default: the last subnet of the Network"),
    ),
    EnableIPv4: nullIsDefault(
      z
        .boolean()
        .default(true)
        .describe("lease IPv4 subnets of Network (default true); false with EnableIPv6 true is IPv6-only"),
    ),
    EnableIPv6: nullIsDefault(
      z
        .boolean()
        .default(false)
        .describe(
          `lease IPv6 subnets of IPv6Network too (default false): dual-stack, or IPv6-only with EnableIPv4 false. Backends that carry IPv6: ${IPV6_BACKENDS.join(", ")}`,
        ),
    ),
    EnableNFTables: nullIsDefault(
      z
        .boolean()
        .default(false)
        .describe(
          "flannel's choice of nftables over iptables for its masquerade and forward rules (default false); accepted and ignored: weft writes its masquerade rules (--ip-masq) with nftables always, in a table of its own (weft), and writes no forward rules",
        ),
    ),
    IPv6Network: cidr(
      (v) => formatPrefix6(parseMaskedPrefix6(v)),
      "the pod network as IPv6 CIDR, e.g. 2001:2:0:8000::/49; required with EnableIPv6. Host bits are cleared, as in flannel",
    ),
    IPv6SubnetLen: unsetIf(
      "0",
      isZeroNumber,
      true,
      z
        .number()
        .int()
        .optional()
        .describe(
          "prefix length of each node's IPv6 subnet, at most 126 and at least IPv6Network + 2, with at most 2^48 subnets between IPv6SubnetMin and IPv6SubnetMax; default 64 (for IPv6Networks of /62 and larger), else IPv6Network + 2",
        ),
    ),
    IPv6SubnetMin: unsetIf(
      ":: in any spelling,",
      parsesToZero(parseIpv6),
      true,
      z
        .string()
        .superRefine(ipv6Address)
        .optional()
        .describe(
          "first IPv6 subnet that may be leased (its network address); default: the second subnet (flannel skips the first)",
        ),
    ),
    IPv6SubnetMax: unsetIf(
      ":: in any spelling,",
      parsesToZero(parseIpv6),
      true,
      z
        .string()
        .superRefine(ipv6Address)
        .optional()
        .describe(
          "last IPv6 subnet that may be leased (its network address); default: the last subnet of the IPv6Network",
        ),
    ),
    Backend: backendSchema
      // Parsed like a given Backend, so the vxlan keys' defaults are written once, above.
      .prefault({ Type: "vxlan" })
      .describe(
        `how pod traffic crosses hosts: Type is one of ${BACKEND_TYPES.join(", ")} (default vxlan). ` +
          `A key no backend reads (a typo) is refused; another backend's, flannel's too (VNI under host-gw, PSK of wireguard), is ignored under ${[...FLANNEL_TYPES].join(", ")} as flanneld ignores it, ` +
          `and logged (CONFIG_BACKEND_KEY_IGNORED), but refused under ${BACKEND_TYPES.filter((t) => !FLANNEL_TYPES.has(t)).join(", ")}, which flanneld does not have ` +
          `(except the keys of flannel's Windows backends, ${[...WINDOWS_ONLY].join(", ")}, ignored and logged, and a null, which leaves a key unset)`,
      ),
  })
  .strict()
  .superRefine((c, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: "custom", path: [path], message });
    if (!c.EnableIPv4 && !c.EnableIPv6)
      issue(
        "EnableIPv4",
        "at least one address family must be enabled: set EnableIPv4 or EnableIPv6 (or both, for dual-stack) to true",
      );
    if (c.EnableIPv4 && c.Network === undefined)
      issue(
        "Network",
        "Network is required while EnableIPv4 is true (the default); give an IPv4 CIDR, or set EnableIPv4 to false for IPv6-only",
      );
    if (c.EnableIPv6 && c.IPv6Network === undefined)
      issue("IPv6Network", "EnableIPv6 needs IPv6Network, the pod network as IPv6 CIDR (e.g. 2001:2:0:8000::/49)");
    if (c.Backend.Type === "wasm-vxlan") {
      const [p, p6] = [c.Backend.Port, c.Backend.IPv6OverIPv4Port];
      const fix = "set Backend.IPv6OverIPv4Port to another free port";
      if (p6 === p)
        ctx.addIssue({
          code: "custom",
          path: ["Backend", "IPv6OverIPv4Port"],
          message: `the same as Backend.Port ${p}: where IPv6 rides the IPv4 underlay both dataplanes listen on the IPv4 address, each on its own port; ${fix}`,
        });
      if (p6 === undefined && c.EnableIPv6)
        ctx.addIssue({
          code: "custom",
          path: ["Backend", "Port"],
          message: `leaves no Port + 1 for IPv6 over the IPv4 underlay (Backend.IPv6OverIPv4Port's default); ${fix}, or a lower Backend.Port`,
        });
    }
    if ((c.Backend.Type === "udp" || c.Backend.Type === "wasm-vxlan") && c.Backend.QueuesPerWorker !== undefined) {
      // Checked here, before the node joins and leases, not first by the dataplane it would start.
      const workers = c.Backend.Workers ?? defaultWorkers();
      if (workers * c.Backend.QueuesPerWorker > TUN_MAX_QUEUES)
        ctx.addIssue({
          code: "custom",
          path: ["Backend", "QueuesPerWorker"],
          message: `${workers} workers${c.Backend.Workers === undefined ? " (this host's default)" : ""} × ${c.Backend.QueuesPerWorker} = ${workers * c.Backend.QueuesPerWorker} TUN queues, above the driver's ${TUN_MAX_QUEUES}: give fewer Workers or QueuesPerWorker`,
        });
    }
    if (c.EnableIPv6 && !IPV6_BACKENDS.includes(c.Backend.Type)) {
      issue(
        "Backend",
        `Backend.Type ${c.Backend.Type} cannot carry IPv6 (${NO_IPV6_BECAUSE[c.Backend.Type]}); with EnableIPv6 use one of ${IPV6_BACKENDS.join(", ")}`,
      );
    }
  });

/** A Backend key its Type does not read, and the backends that do (weft's Types, then flannel's it lacks). */
export interface IgnoredBackendKey {
  readonly key: string;
  readonly types: readonly string[];
}

export type NetConf = z.infer<typeof netConfSchema> & {
  /** Backend keys of other backends, ignored under flannel's Types as flanneld ignores them (under weft's own, only Windows-only ones); the agent logs them (ignoredKeysMessage). */
  readonly ignoredBackendKeys: readonly IgnoredBackendKey[];
  /** The IPv4 subnet space; undefined when EnableIPv4 is false. */
  readonly space: SubnetSpace | undefined;
  /** The IPv6 subnet space; undefined unless EnableIPv6 is true. */
  readonly space6: Ipv6SubnetSpace | undefined;
};

/**
 * Parses and checks net-conf.json text. Throws one WeftError (code CONFIG_NET_CONF_INVALID, or CONFIG_NET_CONF_NOT_JSON) that names the
 * key, the value found and what is allowed — before anything in the kernel is touched.
 */
export function parseNetConf(text: string, source = "net-conf.json"): NetConf {
  let raw: unknown;
  const depth = jsonDepth(text);
  if (depth > MAX_JSON_DEPTH) {
    throw new WeftError(
      "CONFIG_NET_CONF_INVALID",
      `${source}: values nested ${depth} levels deep; net-conf.json has at most 2 (Backend inside the top level), and more than ${MAX_JSON_DEPTH} is refused`,
    );
  }
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new WeftError("CONFIG_NET_CONF_NOT_JSON", `${source} is not valid JSON: ${(cause as Error).message}`, {
      cause,
    });
  }
  raw = flannelKeys(raw, source);
  const backend = (raw as { Backend?: unknown } | null)?.Backend;
  // null is no Type, as Go leaves the string empty (which flannel then refuses as a backend).
  const backendType = isObject(backend) ? (backend.Type ?? undefined) : undefined;
  if (isObject(backend) && backendType === undefined) {
    throw new WeftError(
      "CONFIG_NET_CONF_INVALID",
      `${source}: Backend has no Type; give one of ${BACKEND_TYPES.join(", ")} (a config without Backend gets vxlan)`,
    );
  }
  if (backendType !== undefined && !(BACKEND_TYPES as readonly unknown[]).includes(backendType)) {
    throw new WeftError(
      "CONFIG_NET_CONF_INVALID",
      `${source}: Backend.Type is ${excerpt(backendType)}; valid types are ${BACKEND_TYPES.join(", ")}`,
    );
  }
  const option = backendOption(backendType);
  let ignoredBackendKeys: IgnoredBackendKey[] = [];
  if (isObject(backend) && option) {
    const unread = Object.keys(backend)
      .filter((k) => !Object.hasOwn(option.shape, k))
      .map((key) => ({ key, types: typesReading(key) }));
    const type = backendType as string;
    const flannels = FLANNEL_TYPES.has(type);
    // Under weft's own Types, a Windows node's key is ignored too (a ConfigMap shared with Windows
    // nodes: flannel's Helm chart writes MacPrefix), and a null is unset, as everywhere.
    const refused = flannels ? [] : unread.filter((u) => backend[u.key] !== null && !isWindowsOnly(u.key));
    if (refused.length > 0)
      throw new WeftError(
        "CONFIG_NET_CONF_INVALID",
        `${source}: Backend.Type ${type} does not read ${unreadList(refused)}; refused: ${type} is weft's own Type, which flanneld does not have, so no flanneld ignores them here, and a setting made for another Type would lapse unseen: remove them (${readsClause(type)})`,
      );
    const unknown = unread.filter((u) => u.types.length === 0).map((u) => u.key);
    if (unknown.length > 0)
      throw new WeftError(
        "CONFIG_NET_CONF_INVALID",
        `${source}: Backend: unknown key(s) ${keyList(unknown)}, which no backend reads (a misspelt key would leave its default in force): correct or remove them (${readsClause(type)})`,
      );
    ignoredBackendKeys = flannels ? unread : unread.filter((u) => backend[u.key] !== null);
    // Left out before the schema, which would refuse them, and so never in force.
    raw = {
      ...(raw as object),
      Backend: Object.fromEntries(Object.entries(backend).filter(([k]) => Object.hasOwn(option.shape, k))),
    };
  }
  const parsed = netConfSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue.path.join(".") || "(top level)";
    const value = issue.path.reduce<unknown>(
      (v, k) => (v as Record<string | number, unknown> | undefined)?.[k as string],
      raw,
    );
    // Only at the top level: Backend keys its Type does not read were left out above.
    if (issue.code === "unrecognized_keys") {
      // flannel's lists for --use-multi-cluster-cidr: not a typo, so say what to give instead.
      const lists = issue.keys.filter((k) => Object.hasOwn(MULTI_CIDR_LISTS, k.toLowerCase()));
      // The others too, so that a typo beside them is not found only at the next start.
      const others = issue.keys.filter((k) => !lists.includes(k));
      if (lists.length > 0)
        throw new WeftError(
          "CONFIG_NET_CONF_INVALID",
          `${source}: ${lists.join(" and ")}: flannel's lists of pod networks for --use-multi-cluster-cidr, which weft does not have (it reads no ClusterCIDR objects): give the pod network as one range, ${lists.map((k) => MULTI_CIDR_LISTS[k.toLowerCase()]).join(" and ")} (IPv6Network with EnableIPv6: true), and remove ${lists.length > 1 ? "them" : "it"}${others.length > 0 ? `; also unknown: ${keyList(others)}` : ""}`,
        );
      throw new WeftError(
        "CONFIG_NET_CONF_INVALID",
        `${source}: unknown key(s) ${keyList(issue.keys)}; allowed here: ${Object.keys(netConfSchema.shape).join(", ")}`,
      );
    }
    throw new WeftError("CONFIG_NET_CONF_INVALID", `${source}: ${key} = ${excerpt(value)}: ${issue.message}`);
  }
  const c = parsed.data;
  try {
    // Keys of a disabled family are ignored, as flannel ignores them.
    const space = c.EnableIPv4 ? SubnetSpace.fromConfig({ ...c, Network: c.Network! }) : undefined;
    const space6 = c.EnableIPv6 ? Ipv6SubnetSpace.fromConfig({ ...c, IPv6Network: c.IPv6Network! }) : undefined;
    return { ...c, ignoredBackendKeys, space, space6 };
  } catch (cause) {
    throw new WeftError("CONFIG_NET_CONF_INVALID", `${source}: ${(cause as Error).message}`, { cause });
  }
}

/** flannel's multi-cluster-cidr lists (lowercased, as keys match regardless of case) and weft's one-range key for each. */
const MULTI_CIDR_LISTS: Record<string, string> = { networks: "Network", ipv6networks: "IPv6Network" };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** The Backend object schema of a type, or undefined for no valid type. */
const backendOption = (type: unknown) =>
  backendSchema.options.find((o) => (o.shape.Type as z.ZodLiteral<string>).value === type);

/**
 * The parsed JSON with keys as flannel reads them: Go's encoding/json takes a key that equals a
 * known one ignoring case as that key, and flannel looks Backend.Type up lowercased
 * (pkg/backend/manager.go), so "network" and {"type": "VXLAN"} work there and must here. Unknown
 * keys keep their spelling for parseNetConf's messages.
 */
function flannelKeys(raw: unknown, source: string): unknown {
  if (!isObject(raw)) return raw;
  const known = (obj: Record<string, unknown>, keys: readonly string[], where: string) =>
    withKnownKeys(
      obj,
      keys,
      (first, second, key) =>
        new WeftError(
          "CONFIG_NET_CONF_INVALID",
          `${source}: ${where}${excerpt(first)} and ${excerpt(second)} are both the key ${key} (keys match regardless of case, as in flannel); keep one of them`,
        ),
    );
  const conf = known(raw, Object.keys(netConfSchema.shape), "");
  if (!isObject(conf.Backend)) return conf;
  // Type first: it says which keys the rest may be.
  const backend = known(conf.Backend, ["Type"], "Backend: ");
  if (typeof backend.Type === "string") backend.Type = backend.Type.toLowerCase();
  const option = backendOption(backend.Type);
  return { ...conf, Backend: option ? known(backend, Object.keys(option.shape), "Backend: ") : backend };
}

/**
 * The backends that read `key`, regardless of case as keys match ("vni" is VNI): weft's Types,
 * then flannel's that weft lacks ("flannel's wireguard").
 */
const typesReading = (key: string): string[] => {
  const is = (k: string) => k.toLowerCase() === key.toLowerCase();
  return [
    ...backendSchema.options
      .filter((o) => Object.keys(o.shape).some(is))
      .map((o) => (o.shape.Type as z.ZodLiteral<string>).value),
    ...Object.entries(FLANNEL_ONLY_KEYS)
      .filter(([, keys]) => keys.some(is))
      .map(([b]) => `flannel's ${b}`),
  ];
};

/** Unread keys for a message, each with the backends it belongs to. */
const unreadList = (unread: readonly IgnoredBackendKey[]) =>
  keyList(
    unread.map((u) => u.key),
    (i) => ` (${unread[i].types.length > 0 ? `a key of ${unread[i].types.join(", ")}` : "no backend's key"})`,
  );

/** "vxlan reads VNI, Port, ...": the keys a Type reads on Linux, for a message (not Type, nor the Windows-only ones). */
function readsClause(type: string): string {
  const keys = Object.keys(backendOption(type)!.shape).filter((k) => k !== "Type" && !WINDOWS_ONLY.has(k));
  return keys.length > 0 ? `${type} reads ${keys.join(", ")}` : `${type} reads no key but Type`;
}

/**
 * Keys for a message, each with its `note`: at most 5, each quoted unless a plain word, so that a
 * huge file never makes a huge line.
 */
function keyList(keys: readonly string[], note: (i: number) => string = () => ""): string {
  const more = keys.length > 5 ? ` and ${keys.length - 5} more` : "";
  return (
    keys
      .slice(0, 5)
      .map((k, i) => (/^\w{1,40}$/.test(k) ? k : excerpt(k)) + note(i))
      .join(", ") + more
  );
}

/**
 * The warning for a config's ignored Backend keys ("Backend.Type host-gw does not read VNI (a key
 * of vxlan, wasm-vxlan) ..."), or undefined when none was ignored.
 */
export function ignoredKeysMessage(conf: NetConf, source: string): string | undefined {
  const ignored = conf.ignoredBackendKeys;
  if (ignored.length === 0) return undefined;
  const type = conf.Backend.Type;
  const as = FLANNEL_TYPES.has(type) ? `flanneld's ${type} backend ignores them` : "flanneld on Linux ignores them";
  return `${source}: Backend.Type ${type} does not read ${unreadList(ignored)}; ignored, as ${as}: remove them (${readsClause(type)})`;
}

/**
 * The config reference: every key with its description, as the Markdown table in the README
 * (`weft config-reference` prints it). A Backend key that means the same for several types
 * (Workers, Offloads) gets one row naming them all. Descriptions are escaped for Markdown, where
 * e.g. flannel.<VNI> would otherwise vanish as an HTML tag.
 */
export function configReference(): string {
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/\|/g, "\\|");
  const describe = (v: unknown) => esc((v as z.ZodType).description ?? "");
  const lines = ["| key | meaning |", "|---|---|"];
  for (const [k, v] of Object.entries(netConfSchema.shape)) lines.push(`| \`${k}\` | ${describe(v)} |`);
  const rows = new Map<string, { key: string; meaning: string; types: string[] }>();
  for (const option of backendSchema.options) {
    const type = (option.shape.Type as z.ZodLiteral<string>).value;
    for (const [key, v] of Object.entries(option.shape)) {
      if (key === "Type") continue;
      const meaning = describe(v);
      const row = rows.get(`${key}\0${meaning}`) ?? { key, meaning, types: [] };
      row.types.push(type);
      rows.set(`${key}\0${meaning}`, row);
    }
  }
  for (const r of rows.values()) lines.push(`| \`Backend.${r.key}\` (${r.types.join(", ")}) | ${r.meaning} |`);
  return lines.join("\n");
}
