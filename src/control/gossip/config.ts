// Membership configuration with named default profiles, as memberlist's DefaultLANConfig,
// DefaultLocalConfig and DefaultWANConfig. Timing values follow memberlist, except where the LAN
// profile says otherwise (measured with bench:gossip, see ARCHITECTURE.md); the tombstone,
// reconnect and size settings are weft's own (memberlist has no tombstone retention).
import { withDefaults } from "../options.js";
import type { Addr } from "../runtime.js";
import { WeftError } from "../../errors.js";

/** The gossip protocol versions this code speaks (messages.ts says what each one adds). */
export const PROTOCOL_MIN = 1;
export const PROTOCOL_MAX = 2;

export interface MemberlistConfig {
  /** Unique node name; the cluster identifies a node by it (and its record by name + incarnation). */
  readonly name: string;
  /** Address others reach this node at. Defaults to transport.local; set it when bound to 0.0.0.0. */
  readonly advertise?: Addr;

  /** One failure-detector round: ping one member and wait this long for any ack. */
  readonly probeIntervalMs: number;
  /** Wait for a direct ack before asking `indirectChecks` members to ping on our behalf. */
  readonly probeTimeoutMs: number;
  readonly indirectChecks: number;
  /** Also ping over the stream transport when the direct UDP ping failed (gets through UDP loss). */
  readonly tcpPingFallback: boolean;
  /** Probe at a fixed phase of each slot, from the name's hash (schedule.ts): a crash meets its
   *  first probe within about one interval. false: a random phase per node (a crash waits up to
   *  two; measured at 1,000 nodes, the join wave's p99 was lower that way, see ARCHITECTURE.md). */
  readonly probePhaseFromName: boolean;
  /** Lifeguard suspicion timeout: min = mult × max(1, log10 N) × probeInterval (at least 3 probe
   *  intervals, suspicion.ts), max = min × maxMult.
   *  The last probe before a death (see state.ts) is part of it, not added to it. */
  readonly suspicionMult: number;
  readonly suspicionMaxTimeoutMult: number;
  /** Independent accusers that shorten a suspicion from max to min (Lifeguard's K; memberlist
   *  uses suspicionMult − 2). */
  readonly suspicionConfirmations: number;
  /** Local health: probe interval and timeout stretch up to this factor when we look unhealthy. */
  readonly awarenessMaxMultiplier: number;

  /** Each broadcast is sent RetransmitMult × ceil(log10(N + 1)) times, then dropped from the queue. */
  readonly retransmitMult: number;
  /** In a wave (see waveChanges), another member's "alive" is sent only
   *  ceil(waveRetransmitMult × ceil(log10(N + 1))) times (may be a fraction): delta pulls find
   *  what the shorter push misses (pull.ts). Suspicions, deaths and this node's own record keep
   *  retransmitMult. */
  readonly waveRetransmitMult: number;
  /** A node is in a wave while it took at least this many record changes in the last
   *  pullWindowMs (a lone join or failure is not a wave: its news keeps the full push). */
  readonly waveChanges: number;
  /** In a wave, pull the live records a random member took in the last pullWindowMs and this
   *  node lacks, this often (0: never; nothing is sent outside waves). */
  readonly pullIntervalMs: number;
  readonly pullWindowMs: number;
  readonly gossipIntervalMs: number;
  readonly gossipNodes: number;
  /** Each broadcast rides on at most one packet per gossip round (pings and acks included; deaths
   *  excepted), so a member's sends of one piece of news spread over rounds instead of coming in
   *  one burst (broadcast.ts). false: memberlist's queue, least sent first in every packet. */
  readonly gossipOncePerRound: boolean;
  /** Dead members still receive gossip this long, so a falsely declared node hears it and refutes. */
  readonly gossipToTheDeadMs: number;
  /** Full-state anti-entropy with one random member; scaled up above 32 members (memberlist). */
  readonly pushPullIntervalMs: number;
  /** Bound of one stream exchange (join, push-pull, reliable send, TCP ping fallback). */
  readonly tcpTimeoutMs: number;
  /** Retry a dead member's address (Serf's reconnect) so a healed partition merges by itself. */
  readonly reconnectIntervalMs: number;
  /** Dead and left records stay this long, so stale gossip (alive at an old incarnation) about
   *  them is recognised as old and cannot bring them back. */
  readonly tombstoneRetentionMs: number;

  /** The highest gossip protocol version this node speaks and accepts (messages.ts; memberlist's
   *  ProtocolVersion): 2 sends compact records to members known to speak 2; 1 behaves on the wire
   *  as agents before compact records did (the older agent in tests; no flag sets it). */
  readonly protocolVersion: number;

  /** Largest UDP frame (ciphertext, tag and header included). */
  readonly maxPacketBytes: number;
  /** Largest stream frame (push-pull state, reliable message). */
  readonly maxStreamBytes: number;
  /** Largest Delegate.nodeMeta record. */
  readonly maxMetaBytes: number;
  /** Broadcast queue bound; the most retransmitted, oldest entries go first. */
  readonly maxQueuedBroadcasts: number;
}

export type GossipProfile = Omit<MemberlistConfig, "name" | "advertise">;

const DAY_MS = 24 * 3600 * 1000;

const lan: GossipProfile = {
  probeIntervalMs: 1000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  tcpPingFallback: true,
  probePhaseFromName: true,
  // memberlist: 4 (k = 2). A crashed member's first failed probe brings its witnesses along (the
  // helpers that nacked, state.ts suspectByProbe), and every member is probed once per interval
  // (schedule.ts), so independent accusers follow one per second; a member that is merely slow
  // is usually reached by a helper, and a lone accuser leaves it the long maximum (18 s at 1,000
  // nodes) to refute: min 3 s is safe there.
  suspicionMult: 1,
  suspicionMaxTimeoutMult: 6,
  suspicionConfirmations: 2,
  awarenessMaxMultiplier: 8,
  retransmitMult: 4,
  // Join waves at 1,000 nodes (ARCHITECTURE.md, "Gossip at 1,000 nodes"): a short push, then pulls.
  waveRetransmitMult: 0.5,
  waveChanges: 16,
  pullIntervalMs: 250,
  pullWindowMs: 4000,
  // memberlist: 200 ms. Gossip only sends when there is news, so this costs nothing when idle and
  // doubles how much news a node can pass on during a join wave.
  gossipIntervalMs: 100,
  gossipNodes: 3,
  gossipOncePerRound: true,
  gossipToTheDeadMs: 30_000,
  pushPullIntervalMs: 30_000,
  tcpTimeoutMs: 10_000,
  reconnectIntervalMs: 30_000,
  // As long as the lease layer's default reclaim grace (24 h): a record must outlive any decision
  // taken about the node it describes.
  tombstoneRetentionMs: DAY_MS,
  protocolVersion: PROTOCOL_MAX,
  maxPacketBytes: 1400,
  maxStreamBytes: 4 * 1024 * 1024,
  maxMetaBytes: 512,
  maxQueuedBroadcasts: 10_000,
};

/** Named default profiles: LAN (data centre), local (loopback, one host), WAN (high latency). */
export const profiles: Readonly<Record<"lan" | "local" | "wan", GossipProfile>> = Object.freeze({
  lan: Object.freeze(lan),
  local: Object.freeze({
    ...lan,
    probeIntervalMs: 1000,
    probeTimeoutMs: 200,
    indirectChecks: 1,
    suspicionMult: 3,
    suspicionConfirmations: 1,
    retransmitMult: 2,
    gossipIntervalMs: 100,
    gossipToTheDeadMs: 15_000,
    pushPullIntervalMs: 15_000,
    tcpTimeoutMs: 1000,
    reconnectIntervalMs: 10_000,
  }),
  wan: Object.freeze({
    ...lan,
    probeIntervalMs: 5000,
    probeTimeoutMs: 3000,
    suspicionMult: 6,
    suspicionConfirmations: 4,
    gossipIntervalMs: 500,
    gossipNodes: 4,
    gossipToTheDeadMs: 60_000,
    pushPullIntervalMs: 60_000,
    tcpTimeoutMs: 30_000,
    reconnectIntervalMs: 60_000,
  }),
});

export type ProfileName = keyof typeof profiles;

/** A validated configuration: a named profile (or a profile object) plus the node name and overrides. */
export function makeConfig(
  profile: ProfileName | GossipProfile,
  name: string,
  overrides: Partial<MemberlistConfig> = {},
): MemberlistConfig {
  const base = typeof profile === "string" ? profiles[profile] : profile;
  return validateConfig(withDefaults({ ...base, name } as MemberlistConfig, overrides));
}

/** Largest node name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 128;

export function validateConfig(c: MemberlistConfig): MemberlistConfig {
  const bad = (field: string, why: string): never => {
    throw new WeftError("GOSSIP_CONFIG_INVALID", `${field} ${why}; fix the gossip configuration`);
  };
  const nameBytes = Buffer.byteLength(c.name, "utf8");
  if (nameBytes === 0 || nameBytes > MAX_NAME_BYTES) bad("name", `must be 1..${MAX_NAME_BYTES} bytes`);
  const positiveInts: (keyof GossipProfile)[] = [
    "probeIntervalMs",
    "probeTimeoutMs",
    "suspicionMaxTimeoutMult",
    "awarenessMaxMultiplier",
    "retransmitMult",
    "gossipIntervalMs",
    "gossipNodes",
    "pushPullIntervalMs",
    "tcpTimeoutMs",
    "reconnectIntervalMs",
    "tombstoneRetentionMs",
    "maxPacketBytes",
    "maxStreamBytes",
    "maxMetaBytes",
    "maxQueuedBroadcasts",
  ];
  for (const f of positiveInts) {
    const v = c[f];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) bad(f, "must be a positive integer");
  }
  if (!Number.isFinite(c.suspicionMult) || c.suspicionMult <= 0) bad("suspicionMult", "must be a positive number");
  if (!Number.isSafeInteger(c.indirectChecks) || c.indirectChecks < 0) bad("indirectChecks", "must be >= 0");
  if (!Number.isSafeInteger(c.suspicionConfirmations) || c.suspicionConfirmations < 0)
    bad("suspicionConfirmations", "must be >= 0");
  if (!Number.isSafeInteger(c.pullIntervalMs) || c.pullIntervalMs < 0) bad("pullIntervalMs", "must be >= 0");
  if (!Number.isSafeInteger(c.pullWindowMs) || c.pullWindowMs <= 0 || c.pullWindowMs < c.pullIntervalMs)
    bad("pullWindowMs", "must be a positive integer >= pullIntervalMs");
  if (!Number.isSafeInteger(c.waveChanges) || c.waveChanges < 1) bad("waveChanges", "must be a positive integer");
  if (!Number.isFinite(c.waveRetransmitMult) || c.waveRetransmitMult <= 0 || c.waveRetransmitMult > c.retransmitMult)
    bad("waveRetransmitMult", "must be above 0 and at most retransmitMult");
  if (!Number.isSafeInteger(c.gossipToTheDeadMs) || c.gossipToTheDeadMs < 0) bad("gossipToTheDeadMs", "must be >= 0");
  if (!Number.isSafeInteger(c.protocolVersion) || c.protocolVersion < PROTOCOL_MIN || c.protocolVersion > PROTOCOL_MAX)
    bad("protocolVersion", `must be ${PROTOCOL_MIN}..${PROTOCOL_MAX}`);
  if (c.probeTimeoutMs >= c.probeIntervalMs) bad("probeTimeoutMs", "must be below probeIntervalMs");
  if (c.suspicionMaxTimeoutMult < 1) bad("suspicionMaxTimeoutMult", "must be >= 1");
  if (c.maxPacketBytes < 512 || c.maxPacketBytes > 65_000) bad("maxPacketBytes", "must be 512..65000");
  // An alive record with the largest meta must fit into one packet, or it could never be gossiped.
  if (c.maxMetaBytes + MAX_NAME_BYTES + 128 > c.maxPacketBytes)
    bad("maxMetaBytes", "does not fit one packet with its record");
  if (c.maxStreamBytes < c.maxPacketBytes) bad("maxStreamBytes", "must be >= maxPacketBytes");
  if (c.tombstoneRetentionMs < c.gossipToTheDeadMs) bad("tombstoneRetentionMs", "must be >= gossipToTheDeadMs");
  return Object.freeze({ ...c });
}
