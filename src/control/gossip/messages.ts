// Gossip messages and their msgpack encoding. A frame's plaintext is an envelope:
//
//   [wireVersion, senderName]  then one msgpack bin per message
//
// so a compound UDP packet is several messages each framed by its bin length, and a stream frame
// is the same envelope with exactly one message. Each message is a msgpack array whose first
// element is its kind code. Decoding checks every field; a frame with any malformed part is
// refused whole, before anything acts on it.
import { isIP } from "node:net";
import { Decoder, Encoder } from "@msgpack/msgpack";
import type { MemberState, NodeView } from "./delegate.js";
import { MAX_NAME_BYTES, PROTOCOL_MAX } from "./config.js";

const WIRE_VERSION = 1;

/**
 * Gossip protocol versions (memberlist's pmin/pmax/pcur; the envelope's WIRE_VERSION stays 1, so
 * an older agent still reads every frame meant for it). 1: the kinds of the first agents, up to
 * pullReply. 2 adds compact records (alive2, pullReply2, pushPull2: an IPv4 address and port as 6
 * bytes, no state or age for a live record, and what the sender knows of the subject's protocol
 * version, so that knowledge spreads with the records). A node sends a version-2 kind only to a
 * member known to speak 2 (state.ts, MemberEntry.vsn), and its decoder refuses kinds above the
 * version it speaks, as an older agent's refuses kinds it does not know.
 */

/** Largest pull digest (a Bloom filter; see digest.ts): it must fit one packet with room to spare. */
export const MAX_DIGEST_BYTES = 1024;

// One encoder for the module (msgpack's encode() builds a new one per call); encode() returns a
// copy, so callers may keep the bytes.
const encoder = new Encoder();
const encode = (value: unknown): Uint8Array => encoder.encode(value);

/** A member's record as exchanged in push-pull: what members see of it, plus its tombstone age. */
export interface NodeState extends NodeView {
  /** The subject's protocol version as the sender knows it (0: unknown); version-2 kinds only. */
  readonly vsn?: number;
  /** How long ago a tombstone (dead/left) was made; 0 for live records, except the sender's own
   *  record in a catch-up push-pull, where it is the window asked for (Memberlist.catchUpRequest). */
  readonly stateAgeMs: number;
}

export type Message =
  /** Direct probe; `target` is the name the prober expects at the address (a reused address answers nothing). */
  | { kind: "ping"; seq: number; target: string }
  /** Ask the receiver to ping `target` for us and relay the ack (SWIM ping-req). */
  | { kind: "indirectPing"; seq: number; target: string; host: string; port: number; wantNack: boolean }
  | { kind: "ack"; seq: number }
  /** Lifeguard: the helper is alive but heard no ack from the target. */
  | { kind: "nack"; seq: number }
  | { kind: "alive"; node: string; incarnation: number; host: string; port: number; meta: Uint8Array }
  | { kind: "suspect"; node: string; incarnation: number; from: string }
  /** from === node means the node left gracefully. */
  | { kind: "dead"; node: string; incarnation: number; from: string }
  /** A message of the layer above (Delegate.notifyMsg). */
  | { kind: "user"; payload: Uint8Array }
  | { kind: "pushPull"; join: boolean; nodes: NodeState[]; userState: Uint8Array }
  /** Delta pull (pull.ts): "send me the live records you took within windowMs that `digest`
   *  (a Bloom filter of name + incarnation, salted with `salt`) does not hold". Newer than wire
   *  version 1's first agents: an agent without it refuses the frame, and the puller just gets
   *  no answer (see pull.ts on mixed versions). */
  | { kind: "pull"; salt: number; windowMs: number; digest: Uint8Array }
  /** The answer to a pull: records as in push-pull, merged without being gossiped on. */
  | { kind: "pullReply"; nodes: NodeState[] }
  /** Version 2: "alive" with a compact address and the subject's protocol version (0: unknown). */
  | { kind: "alive2"; node: string; incarnation: number; host: string; port: number; meta: Uint8Array; vsn: number }
  /** Version 2: pullReply with compact records. */
  | { kind: "pullReply2"; nodes: NodeState[] }
  /** Version 2: pushPull with compact records, request and reply alike; the request is how a node
   *  learns that a member speaks 2 (an older one refuses it, and the push-pull is made again in
   *  version 1: Memberlist.pushPull). A reply always holds the responder's own record. */
  | { kind: "pushPull2"; join: boolean; nodes: NodeState[]; userState: Uint8Array };

export type MessageKind = Message["kind"];
export const MESSAGE_KINDS = [
  "ping",
  "indirectPing",
  "ack",
  "nack",
  "alive",
  "suspect",
  "dead",
  "user",
  "pushPull",
  "pull",
  "pullReply",
  "alive2",
  "pullReply2",
  "pushPull2",
] as const satisfies readonly MessageKind[];

/** The protocol version that introduced each kind (codes are positions in MESSAGE_KINDS). */
const FIRST_V2_CODE = MESSAGE_KINDS.indexOf("alive2");
export function protocolOf(kind: MessageKind): number {
  return MESSAGE_KINDS.indexOf(kind) >= FIRST_V2_CODE ? 2 : 1;
}

const STATE_CODES = ["alive", "suspect", "dead", "left"] as const satisfies readonly MemberState[];

export function encodeMessage(m: Message): Uint8Array {
  const code = MESSAGE_KINDS.indexOf(m.kind);
  switch (m.kind) {
    case "ping":
      return encode([code, m.seq, m.target]);
    case "indirectPing":
      return encode([code, m.seq, m.target, m.host, m.port, m.wantNack]);
    case "ack":
    case "nack":
      return encode([code, m.seq]);
    case "alive":
      return encode([code, m.node, m.incarnation, m.host, m.port, m.meta]);
    case "suspect":
    case "dead":
      return encode([code, m.node, m.incarnation, m.from]);
    case "user":
      return encode([code, m.payload]);
    case "pushPull":
      return encode([code, m.join, m.nodes.map(nodeStateTuple), m.userState]);
    case "pull":
      return encode([code, m.salt, m.windowMs, m.digest]);
    case "pullReply":
      return encode([code, m.nodes.map(nodeStateTuple)]);
    case "alive2":
      return encode([code, m.node, m.incarnation, compactAddr(m.host, m.port), m.meta, m.vsn]);
    case "pullReply2":
      return encode([code, m.nodes.map(compactTuple)]);
    case "pushPull2":
      return encode([code, m.join, m.nodes.map(compactTuple), m.userState]);
  }
}

/** A canonical dotted-quad IPv4 address (no leading zeros): only those round-trip through 4 bytes. */
const IPV4 = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

/** Version 2's address: an IPv4 host and its port as 6 bytes (network order); any other host
 *  (IPv6, a name) as [host, port], which saves nothing but keeps the record compact otherwise. */
function compactAddr(host: string, port: number): Uint8Array | [string, number] {
  const m = IPV4.exec(host);
  if (!m || m.slice(1).some((o) => Number(o) > 255)) return [host, port];
  return Uint8Array.of(...m.slice(1).map(Number), port >>> 8, port & 0xff);
}

function parseAddr(v: unknown): { host: string; port: number } | undefined {
  if (v instanceof Uint8Array) {
    const port = (v[4] << 8) | v[5];
    return v.length === 6 && isPort(port) ? { host: `${v[0]}.${v[1]}.${v[2]}.${v[3]}`, port } : undefined;
  }
  return Array.isArray(v) && v.length === 2 && isHost(v[0]) && isPort(v[1]) ? { host: v[0], port: v[1] } : undefined;
}

/** A record in version 2: [name, incarnation, addr, meta, vsn], then [state, age] unless it is
 *  alive with age 0 (nearly every record a wave carries). */
function compactTuple(n: NodeState): unknown[] {
  const head = [n.name, n.incarnation, compactAddr(n.host, n.port), n.meta, n.vsn ?? 0];
  return n.state === "alive" && n.stateAgeMs === 0 ? head : [...head, STATE_CODES.indexOf(n.state), n.stateAgeMs];
}
function nodeStateTuple(n: NodeState): unknown[] {
  return [n.name, n.host, n.port, n.incarnation, STATE_CODES.indexOf(n.state), n.meta, n.stateAgeMs];
}

/** Encoded bytes one record adds to a push-pull or pull reply (its tuple in the records array),
 *  in version 1 or, compact, in version 2. */
export function nodeStateSize(n: NodeState, compact = false): number {
  return encode(compact ? compactTuple(n) : nodeStateTuple(n)).length;
}

/** The kind of an encoded message without decoding it: every message is a fixarray (byte 0)
 *  whose first element, the kind code, is a positive fixint (byte 1). */
export function kindOfEncoded(encoded: Uint8Array): MessageKind | undefined {
  return MESSAGE_KINDS[encoded[1]];
}

/** Bytes a message of `length` bytes costs inside an envelope (its bin header). */
export function framedSize(length: number): number {
  return length + (length < 0x100 ? 2 : length < 0x10000 ? 3 : 5);
}

/** Envelope overhead for a sender name: the header array. */
export function envelopeHeader(sender: string): Uint8Array {
  return encode([WIRE_VERSION, sender]);
}

/** Concatenates the header and each encoded message framed as a msgpack bin. */
export function buildEnvelope(header: Uint8Array, messages: readonly Uint8Array[]): Uint8Array {
  let size = header.length;
  for (const m of messages) size += framedSize(m.length);
  const out = new Uint8Array(size);
  out.set(header, 0);
  let at = header.length;
  for (const m of messages) {
    const n = m.length;
    if (n < 0x100) {
      out[at++] = 0xc4;
      out[at++] = n;
    } else if (n < 0x10000) {
      out[at++] = 0xc5;
      out[at++] = n >>> 8;
      out[at++] = n & 0xff;
    } else {
      out[at++] = 0xc6;
      out[at++] = n >>> 24;
      out[at++] = (n >>> 16) & 0xff;
      out[at++] = (n >>> 8) & 0xff;
      out[at++] = n & 0xff;
    }
    out.set(m, at);
    at += n;
  }
  return out;
}

export interface DecodeLimits {
  /** Kinds of a later protocol version are refused, as an agent of this version refuses them
   *  (default PROTOCOL_MAX). */
  readonly maxProtocol?: number;
  readonly maxMetaBytes: number;
  /** Bound of any single bin (user payload, user state); the frame size bounds it anyway. */
  readonly maxFrameBytes: number;
}

export interface DecodedMessage {
  readonly message: Message;
  /** Encoded size, for per-kind byte counters. */
  readonly bytes: number;
}

export interface Envelope {
  readonly sender: string;
  readonly messages: DecodedMessage[];
}

/** Decodes envelopes under fixed limits (one decoder reused: decoding is synchronous). */
export class EnvelopeDecoder {
  private readonly decoder: Decoder;

  constructor(private readonly limits: DecodeLimits) {
    this.decoder = new Decoder({
      maxStrLength: 1024,
      maxBinLength: limits.maxFrameBytes,
      maxArrayLength: limits.maxFrameBytes,
      maxMapLength: 0,
      maxExtLength: 0,
    });
  }

  /** Undefined for anything malformed: wrong version, bad msgpack, a field of the wrong type or size. */
  decode(plaintext: Uint8Array): Envelope | undefined {
    try {
      if (!wellFormed(plaintext, 1)) return undefined;
      // Split first, then parse each bin: the decoder is not re-entered while it iterates.
      const [header, ...bins] = [...this.decoder.decodeMulti(plaintext)];
      if (!Array.isArray(header) || header.length !== 2 || header[0] !== WIRE_VERSION || !isName(header[1])) {
        return undefined;
      }
      const messages: DecodedMessage[] = [];
      for (const bin of bins) {
        if (!(bin instanceof Uint8Array) || !wellFormed(bin, MAX_DEPTH)) return undefined;
        const message = parseMessage(this.decoder.decode(bin), this.limits);
        if (!message) return undefined;
        messages.push({ message, bytes: bin.length });
      }
      return { sender: header[1], messages };
    } catch {
      return undefined;
    }
  }
}

/** Deepest nesting of arrays in any message: a push-pull, its records, a record, its [host, port]. */
const MAX_DEPTH = 4;

/**
 * Checks the msgpack in `b` without building anything: each array's count within the bytes left
 * (every element takes at least one), arrays nested at most `depth` deep, no maps or extensions
 * (no message has any), no value cut short. @msgpack/msgpack allocates an array's slots at its
 * header, before it reads an element, and bounds no depth: one 1.3 KB packet of 250 nested
 * headers, each claiming 4 Mi elements, asked for gigabytes and the agent died out of memory.
 */
function wellFormed(b: Uint8Array, depth: number): boolean {
  const open: number[] = []; // elements still to come in each open array
  let at = 0;
  // Big-endian unsigned of `n` bytes at `at` (n ≤ 4), or -1 past the end.
  const uint = (n: number): number => {
    if (at + n > b.length) return -1;
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + b[at++];
    return v;
  };
  while (at < b.length) {
    const h = b[at++];
    let skip = 0; // bytes of the value after its header
    let items = -1; // an array's count
    if (h <= 0x7f || h >= 0xe0 || h === 0xc0 || h === 0xc2 || h === 0xc3) skip = 0;
    else if (h >= 0x90 && h <= 0x9f) items = h & 0x0f;
    else if (h >= 0xa0 && h <= 0xbf) skip = h & 0x1f;
    else if (h === 0xc4 || h === 0xd9) skip = uint(1);
    else if (h === 0xc5 || h === 0xda) skip = uint(2);
    else if (h === 0xc6 || h === 0xdb) skip = uint(4);
    else if (h === 0xdc || h === 0xdd) {
      items = uint(h === 0xdc ? 2 : 4);
      if (items < 0) return false;
    } else if (h >= 0xca && h <= 0xd3) skip = [4, 8, 1, 2, 4, 8, 1, 2, 4, 8][h - 0xca];
    else return false; // maps, extensions, 0xc1
    if (skip < 0 || at + skip > b.length) return false;
    at += skip;
    if (items > 0) {
      if (open.length >= depth || items > b.length - at) return false;
      open.push(items);
      continue;
    }
    // A whole value: it completes its array, and that array perhaps its own.
    while (open.length > 0 && --open[open.length - 1] === 0) open.pop();
  }
  return open.length === 0;
}

function parseMessage(v: unknown, limits: DecodeLimits): Message | undefined {
  if (!Array.isArray(v) || !isUint(v[0])) return undefined;
  const kind = MESSAGE_KINDS[v[0]];
  if (kind === undefined || protocolOf(kind) > (limits.maxProtocol ?? PROTOCOL_MAX)) return undefined;
  switch (kind) {
    case "ping":
      return v.length === 3 && isUint(v[1]) && isName(v[2]) ? { kind, seq: v[1], target: v[2] } : undefined;
    case "indirectPing":
      return v.length === 6 && isUint(v[1]) && isName(v[2]) && isHost(v[3]) && isPort(v[4]) && typeof v[5] === "boolean"
        ? { kind, seq: v[1], target: v[2], host: v[3], port: v[4], wantNack: v[5] }
        : undefined;
    case "ack":
    case "nack":
      return v.length === 2 && isUint(v[1]) ? { kind, seq: v[1] } : undefined;
    case "alive":
      return v.length === 6 &&
        isName(v[1]) &&
        isUint(v[2]) &&
        isHost(v[3]) &&
        isPort(v[4]) &&
        isBytes(v[5], limits.maxMetaBytes)
        ? { kind, node: v[1], incarnation: v[2], host: v[3], port: v[4], meta: own(v[5]) }
        : undefined;
    case "suspect":
    case "dead":
      return v.length === 4 && isName(v[1]) && isUint(v[2]) && isName(v[3])
        ? { kind, node: v[1], incarnation: v[2], from: v[3] }
        : undefined;
    case "user":
      return v.length === 2 && isBytes(v[1], limits.maxFrameBytes) ? { kind, payload: own(v[1]) } : undefined;
    case "pushPull": {
      if (v.length !== 4 || typeof v[1] !== "boolean" || !Array.isArray(v[2]) || !isBytes(v[3], limits.maxFrameBytes)) {
        return undefined;
      }
      const nodes = parseNodeStates(v[2], limits);
      return nodes && { kind, join: v[1], nodes, userState: own(v[3]) };
    }
    case "pull":
      return v.length === 4 && isUint(v[1]) && v[1] <= 0xffffffff && isUint(v[2]) && isBytes(v[3], MAX_DIGEST_BYTES)
        ? { kind, salt: v[1], windowMs: v[2], digest: own(v[3]) }
        : undefined;
    case "pullReply": {
      if (v.length !== 2 || !Array.isArray(v[1])) return undefined;
      const nodes = parseNodeStates(v[1], limits);
      return nodes && { kind, nodes };
    }
    case "alive2": {
      const addr = v.length === 6 && isName(v[1]) && isUint(v[2]) && parseAddr(v[3]);
      return addr && isBytes(v[4], limits.maxMetaBytes) && isVsn(v[5])
        ? { kind, node: v[1], incarnation: v[2], ...addr, meta: own(v[4]), vsn: v[5] }
        : undefined;
    }
    case "pullReply2": {
      if (v.length !== 2 || !Array.isArray(v[1])) return undefined;
      const nodes = parseNodeStates(v[1], limits, parseCompact);
      return nodes && { kind, nodes };
    }
    case "pushPull2": {
      if (v.length !== 4 || typeof v[1] !== "boolean" || !Array.isArray(v[2]) || !isBytes(v[3], limits.maxFrameBytes)) {
        return undefined;
      }
      const nodes = parseNodeStates(v[2], limits, parseCompact);
      return nodes && { kind, join: v[1], nodes, userState: own(v[3]) };
    }
    default:
      return undefined;
  }
}

function parseCompact(n: unknown, limits: DecodeLimits): NodeState | undefined {
  if (!Array.isArray(n) || (n.length !== 5 && n.length !== 7)) return undefined;
  const [name, incarnation, addrField, meta, vsn, stateCode = 0, stateAgeMs = 0] = n as unknown[];
  const addr = parseAddr(addrField);
  if (!isName(name) || !isUint(incarnation) || !addr || !isBytes(meta, limits.maxMetaBytes) || !isVsn(vsn)) {
    return undefined;
  }
  const state = isUint(stateCode) ? STATE_CODES[stateCode] : undefined;
  // The long form is for what the short one cannot say: a live record with age 0 is always short.
  if (state === undefined || !isUint(stateAgeMs) || (n.length === 7 && state === "alive" && stateAgeMs === 0)) {
    return undefined;
  }
  return { name, ...addr, incarnation, state, meta: own(meta), stateAgeMs, vsn };
}

function parseNodeStates(
  list: unknown[],
  limits: DecodeLimits,
  parse: (n: unknown, limits: DecodeLimits) => NodeState | undefined = parseNodeState,
): NodeState[] | undefined {
  const nodes: NodeState[] = [];
  for (const n of list) {
    const node = parse(n, limits);
    if (!node) return undefined;
    nodes.push(node);
  }
  return nodes;
}

function parseNodeState(n: unknown, limits: DecodeLimits): NodeState | undefined {
  if (!Array.isArray(n) || n.length !== 7) return undefined;
  const [name, host, port, incarnation, stateCode, meta, stateAgeMs] = n as unknown[];
  if (!isName(name) || !isHost(host) || !isPort(port) || !isUint(incarnation) || !isUint(stateCode)) return undefined;
  const state = STATE_CODES[stateCode];
  if (state === undefined || !isBytes(meta, limits.maxMetaBytes) || !isUint(stateAgeMs)) return undefined;
  return { name, host, port, incarnation, state, meta: own(meta), stateAgeMs };
}

function isVsn(v: unknown): v is number {
  return isUint(v) && v <= 255;
}
function isUint(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}
function isName(v: unknown): v is string {
  return typeof v === "string" && v.length > 0 && v.length <= MAX_NAME_BYTES;
}
/** Records carry the address a node bound, always an IP literal: a name would have every packet
 *  to that member wait on a DNS lookup of a name any key holder chose. */
function isHost(v: unknown): v is string {
  return typeof v === "string" && isIP(v) !== 0;
}
/** Port 0 is no member's: the socket refuses to send there. */
function isPort(v: unknown): v is number {
  return isUint(v) && v >= 1 && v <= 65535;
}
/** Decoded bins are views into the frame; copy what is kept, so a record's few meta bytes do not
 *  pin a whole push-pull frame in memory. */
const own = (b: Uint8Array): Uint8Array => b.slice();

function isBytes(v: unknown, max: number): v is Uint8Array {
  return v instanceof Uint8Array && v.length <= max;
}
