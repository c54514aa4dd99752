// One root for every error weft reports to a person: `code` is stable and namespaced by the module
// that throws it, so callers match on it; `message` says what happened and what to do, and never
// repeats the code (the CLI prints `weft: [CODE] message`). Each module's codes are a union below,
// so a new code is added here, where the whole list can be read.

/** IPv4 and IPv6 text parsing (src/net). */
export type NetErrorCode = "NET_BAD_IPV4" | "NET_BAD_IPV6" | "NET_BAD_PREFIX" | "NET_BAD_MAC";

/** net-conf.json and the agent's flags, checked before anything is leased or touched (src/config). */
export type ConfigErrorCode =
  | "CONFIG_NET_CONF_UNREADABLE"
  | "CONFIG_NET_CONF_NOT_JSON"
  | "CONFIG_NET_CONF_INVALID"
  | "CONFIG_NET_CONF_RELOAD_REFUSED"
  | "CONFIG_FLAG_INVALID"
  | "CONFIG_NETWORK_OVERLAPS_HOST"
  | "CONFIG_PORT_CONFLICT"
  | "CONFIG_PORT_IN_USE"
  | "CONFIG_ADDRESS_NOT_LOCAL";

/** Membership: gossip profile, keys, members, frames (src/control/gossip). */
export type GossipErrorCode =
  | "GOSSIP_CONFIG_INVALID"
  | "GOSSIP_KEY_INVALID"
  | "GOSSIP_KEY_FILE_INVALID"
  | "GOSSIP_KEY_FILE_UNREADABLE"
  | "GOSSIP_KEY_FILE_EXPOSED"
  | "GOSSIP_KEY_FILE_NOT_OWNED"
  | "GOSSIP_KEY_ID_COLLISION"
  | "GOSSIP_NODE_UNKNOWN"
  | "GOSSIP_MESSAGE_TOO_BIG"
  | "GOSSIP_META_TOO_BIG"
  | "GOSSIP_STATE_TOO_BIG"
  | "GOSSIP_NOT_RUNNING"
  | "GOSSIP_BAD_RESPONSE"
  | "GOSSIP_FRAME_REFUSED"
  | "GOSSIP_NAME_CONFLICT"
  | "GOSSIP_NAME_HELD"
  | "GOSSIP_MEMBERS_FILE_INVALID";

/** The gossip transport's sockets (src/control/transport). */
export type TransportErrorCode =
  | "TRANSPORT_TIMEOUT"
  | "TRANSPORT_TOO_BIG"
  | "TRANSPORT_CLOSED"
  | "TRANSPORT_REFUSED"
  | "TRANSPORT_CONNECT_FAILED"
  | "TRANSPORT_BIND_FAILED";

/** Subnet leasing: the ring, its messages and its saved state (src/control/lease). */
export type LeaseErrorCode =
  | "LEASE_ALREADY_LEASED"
  | "LEASE_ALREADY_STARTED"
  | "LEASE_BAD_MESSAGE"
  | "LEASE_BAD_NETWORK_CONFIG"
  | "LEASE_BAD_SEEDS"
  | "LEASE_BAD_SLOT"
  | "LEASE_BAD_STATE"
  | "LEASE_BAD_TRANSFER"
  | "LEASE_INCONSISTENT"
  | "LEASE_NOT_ADMITTED"
  | "LEASE_NOT_OWNER"
  | "LEASE_NOT_RUNNING"
  | "LEASE_PERSIST_FAILED"
  | "LEASE_RECLAIM_ALIVE"
  | "LEASE_RECLAIM_SELF"
  | "LEASE_RECLAIM_UNKNOWN"
  | "LEASE_RING_MISMATCH"
  | "LEASE_STATE_CORRUPT"
  | "LEASE_STATE_MISMATCH"
  | "LEASE_STATE_TRANSFERS_CORRUPT"
  | "LEASE_STATE_UNREADABLE"
  | "LEASE_STATE_VACATED_CORRUPT"
  | "LEASE_STATE_GONE_CORRUPT"
  | "LEASE_STOPPED";

/** The agent's host-side plumbing: underlay choice, subnet file, state dir (src/agent). */
export type AgentErrorCode =
  | "AGENT_UNDERLAY_NOT_FOUND"
  | "AGENT_SUBNET_ENV_INVALID"
  | "AGENT_SUBNET_FILE_UNUSABLE"
  | "AGENT_STATE_DIR_UNUSABLE"
  | "AGENT_STATE_DIR_LOCKED"
  | "AGENT_STOPPED"
  | "AGENT_STOP_INCOMPLETE"
  | "AGENT_ROLLBACK_FAILED"
  | "AGENT_SWAP_STOP_FAILED";

/** Kernel state through iproute2 and nft (src/kernel). */
export type KernelErrorCode =
  | "KERNEL_TOOL_MISSING"
  | "KERNEL_COMMAND_FAILED"
  | "KERNEL_SYSCTL_READ_ONLY"
  | "KERNEL_IPROUTE2_TOO_OLD";

/** Backends and what they keep in the state dir (src/backends). */
export type BackendErrorCode =
  | "BACKEND_UNKNOWN"
  | "BACKEND_STATE"
  | "BACKEND_NOT_RUNNING"
  | "BACKEND_NO_UNDERLAY_ADDRESS"
  | "BACKEND_HOSTGW_ADDRESS_NOT_LOCAL"
  | "BACKEND_VTEP_MAC_UNREADABLE"
  | "BACKEND_VTEP_MAC_CORRUPT"
  | "BACKEND_VTEP_MAC_PERSIST_FAILED"
  | "BACKEND_NO_IPV6"
  | "BACKEND_NO_UNDERLAY"
  | "BACKEND_IPV6_MTU";

/** The userspace dataplane (src/dataplane). */
export type DataplaneErrorCode =
  | "DATAPLANE_MTU"
  | "DATAPLANE_PEERS_FULL"
  | "DATAPLANE_SUBNET_OVERLAP"
  | "DATAPLANE_FAMILY"
  | "DATAPLANE_QUEUES"
  | "DATAPLANE_STOPPED"
  | "DATAPLANE_TUN_GONE"
  | "DATAPLANE_WORKER_BUILD_MISMATCH"
  | "DATAPLANE_WORKER_CRASH_LOOP"
  | "DATAPLANE_WORKER_START_FAILED";

/** The native addon's handles (src/io); system call failures keep Node's errno codes (EBADF, ...). */
export type IoErrorCode = "IO_ADDON_NOT_BUILT" | "IO_CLOSED" | "IO_LINK_STATS" | "IO_WAIT_ON_MAIN_THREAD";

/** The Wasm hot path; route table failures carry the name from assembly/route/codes.ts. */
export type HotpathErrorCode =
  | "HOTPATH_BUILD_MISMATCH"
  | "HOTPATH_NOT_BUILT"
  | "HOTPATH_NO_CONSTANT"
  | "HOTPATH_OUT_OF_MEMORY"
  | "HOTPATH_ROUTE_TABLE_SIZE"
  | `HOTPATH_ROUTE_ERR_${string}`;

/** The `weft` command line and its client of a running agent (src/cli). */
export type CliErrorCode =
  | "CLI_BAD_NUMBER"
  | "CLI_BAD_BOOLEAN"
  | "CLI_BAD_ADDRESS"
  | "CLI_MISSING_OPTION"
  | "CLI_MISSING_ARGUMENT"
  | "CLI_UNKNOWN_OPTION"
  | "CLI_UNKNOWN_COMMAND"
  | "CLI_EXCESS_ARGUMENTS"
  | "CLI_BAD_CHOICE"
  | "CLI_FLANNELD_FLAG"
  | "CLI_FLANNELD_TABLE"
  | "CLI_AGENT_ERROR"
  | "CLI_AGENT_UNREACHABLE"
  | "CLI_AGENT_TIMEOUT"
  | "CLI_KEY_FILE_EXISTS"
  | "CLI_KEY_FILE_UNWRITABLE"
  | "CLI_DEMO_NEEDS_ROOT"
  | "CLI_DEMO_PING_FAILED"
  | "CLI_DEMO_BAD_BACKEND";

/** Namespaces and agents built for demos, tests and benchmarks (src/lab). */
export type LabErrorCode =
  | "LAB_AGENT_RUNNING"
  | "LAB_NO_ADDRESS"
  | "LAB_AGENT_EXITED"
  | "LAB_AGENT_TIMEOUT"
  | "LAB_AGENT_NOT_RUNNING"
  | "LAB_WAIT_TIMEOUT"
  | "LAB_IPERF_NO_RESULT"
  | "LAB_IPERF_FAILED"
  | "LAB_IPERF_TIMED_OUT"
  | "LAB_IPERF_SERVER_TIMEOUT"
  | "LAB_IPERF_SERVER_EXITED"
  | "LAB_TRAFFIC_TOOL_MISSING"
  | "LAB_TRAFFIC_TOOL_FAILED"
  | "LAB_POD_NO_ADDRESS"
  | "LAB_CHAOS_BAD_LOSS"
  | "LAB_CHAOS_SLOW_CONNECT"
  | "LAB_CHAOS_SLOW_EXITED"
  | "LAB_CHAOS_TMPFS";

/**
 * The CNI plugin and the runtime that runs plugins (src/cni): one per CNI spec error code, whose
 * number travels as `cniCode` (and on the wire as `code`); CNI_PLUGIN_ERROR for another plugin's own codes.
 */
export type CniErrorCode =
  | "CNI_INCOMPATIBLE_VERSION"
  | "CNI_UNSUPPORTED_FIELD"
  | "CNI_UNKNOWN_CONTAINER"
  | "CNI_INVALID_ENV"
  | "CNI_IO_FAILURE"
  | "CNI_DECODE_FAILURE"
  | "CNI_INVALID_CONFIG"
  | "CNI_TRY_AGAIN_LATER"
  | "CNI_NOT_AVAILABLE"
  | "CNI_PLUGIN_CRASHED"
  | "CNI_ADDRESS_OUTSIDE_SUBNET"
  | "CNI_PLUGIN_ERROR";

/** `weft install-cni` (src/cni/install.ts): no plugin run, so no CNI number. */
export type CniInstallErrorCode =
  | "CNI_BUNDLE_INCOMPLETE"
  | "CNI_INSTALL_BAD_NAME"
  | "CNI_INSTALL_BUSY"
  | "CNI_INSTALL_NO_TIMEOUT";

/** `weft bench` (src/bench). */
export type BenchErrorCode =
  | "BENCH_NEEDS_ROOT"
  | "BENCH_BAD_BACKEND"
  | "BENCH_NO_BASELINE"
  | "BENCH_BAD_SETTING"
  | "BENCH_INTERRUPTED"
  | "BENCH_RUNS_FAILED"
  | "BENCH_MICRO_FAILED"
  | "BENCH_PROCESS_GONE"
  | "BENCH_NO_CONNECTIVITY"
  | "BENCH_AGENT_GONE"
  | "BENCH_NO_TRAFFIC"
  | "BENCH_PROBE_FAILED"
  | "BENCH_NO_IPV6_LAB";

export type ErrorCode =
  | NetErrorCode
  | ConfigErrorCode
  | GossipErrorCode
  | TransportErrorCode
  | LeaseErrorCode
  | AgentErrorCode
  | KernelErrorCode
  | BackendErrorCode
  | DataplaneErrorCode
  | IoErrorCode
  | HotpathErrorCode
  | CliErrorCode
  | LabErrorCode
  | CniErrorCode
  | CniInstallErrorCode
  | BenchErrorCode;

export class WeftError<C extends ErrorCode = ErrorCode> extends Error {
  override readonly name = "WeftError";
  /** Evidence too long for the message (a tool's output, socket states), for reports to record. */
  readonly detail?: string;

  constructor(
    readonly code: C,
    message: string,
    options?: { cause?: unknown; detail?: string },
  ) {
    super(message, options);
    if (options?.detail !== undefined) this.detail = options.detail;
  }
}

/** True when `err` is a WeftError with this code (for catch blocks that handle one case). */
export function isWeftError<C extends ErrorCode>(err: unknown, code: C): err is WeftError<C> {
  return err instanceof WeftError && err.code === code;
}

/** The text of anything thrown, for messages that wrap a lower layer's failure. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
