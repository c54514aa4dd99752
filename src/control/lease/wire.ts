// Encoding of the lease layer's messages (msgpack) and of ring states in a plain form shared by
// messages and the state file. Everything coming in is checked field by field and bounded in
// size, so garbage or a hostile peer gets a LEASE_BAD_MESSAGE error, never a half-built state.
import { decode, encode } from "@msgpack/msgpack";
import { WeftError } from "../../errors.js";
import type { RingRun, RingState } from "./ring.js";
import { MAX_SLOTS } from "./slots.js";

export type LeaseMessage =
  /** Ring changes (a broadcast delta) or a full ring (push-pull). */
  | { readonly kind: "state"; readonly ring: RingState }
  /** "I have no subnet: please give me free slots." Answered by a reply with the same id. */
  | { readonly kind: "request"; readonly id: number }
  /** Answer to a request, carrying the donor's full ring (which includes any transfer). */
  | { readonly kind: "reply"; readonly id: number; readonly granted: boolean; readonly ring: RingState }
  /** An operator reclaimed `node`: heirs of its slots take them over. */
  | { readonly kind: "reclaim"; readonly node: string };

/** A ring state as plain data: owner names once, then runs as [start, count, owner index,
 *  version, leased 0/1]. Stored as is in the state file (JSON) and in messages (msgpack). */
export interface PlainRing {
  readonly seeds: string[] | null;
  readonly owners: string[];
  readonly runs: Array<[number, number, number, number, 0 | 1]>;
}

const WIRE_FORMAT = 1;
const KIND = { state: 1, request: 2, reply: 3, reclaim: 4 } as const;
/** Bound on node names (gossip itself allows 128 bytes) and, via msgpack, on any string. */
const MAX_NAME_BYTES = 255;
const MAX_MESSAGE_BYTES = 4 << 20;
/** Bound on runs in one ring state. The ring holds ranges, so a full ring has a few runs per
 *  node; this is far above any real cluster and keeps a hostile message bounded. */
export const MAX_RUNS = 65536;

export function encodeMessage(fingerprint: string, msg: LeaseMessage): Uint8Array {
  switch (msg.kind) {
    case "state":
      return encode([WIRE_FORMAT, fingerprint, KIND.state, ringToWire(msg.ring)]);
    case "request":
      return encode([WIRE_FORMAT, fingerprint, KIND.request, msg.id]);
    case "reply":
      return encode([WIRE_FORMAT, fingerprint, KIND.reply, msg.id, msg.granted, ringToWire(msg.ring)]);
    case "reclaim":
      return encode([WIRE_FORMAT, fingerprint, KIND.reclaim, msg.node]);
  }
}

/** Decodes and checks a message of this network. Throws LEASE_BAD_MESSAGE for anything
 *  malformed and LEASE_RING_MISMATCH for a message from a differently configured network. */
export function decodeMessage(fingerprint: string, bytes: Uint8Array): LeaseMessage {
  return decodeMessageFor([fingerprint], bytes).message;
}

/** Push-pull state of several families (one ring each): the families' messages side by side.
 *  One family's state is its message as is. */
export function encodeStateBundle(parts: readonly Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0] : encode(parts);
}

/** The messages of a push-pull state: a bundle's parts, or the one message it is. */
export function splitStateBundle(bytes: Uint8Array): Uint8Array[] {
  try {
    // A lease message holds strings and numbers, so it never decodes under these limits.
    const v = decode(bytes, {
      maxStrLength: 0,
      maxArrayLength: 2,
      maxMapLength: 0,
      maxExtLength: 0,
      maxBinLength: MAX_MESSAGE_BYTES,
    });
    if (Array.isArray(v) && v.length > 0 && v.every((p) => p instanceof Uint8Array)) return v as Uint8Array[];
  } catch {
    // not a bundle
  }
  return [bytes];
}

/** decodeMessage for a node with one ring per address family: which family's network the
 *  message is for (by its fingerprint), and the message. */
export function decodeMessageFor(
  fingerprints: readonly string[],
  bytes: Uint8Array,
): { fingerprint: string; message: LeaseMessage } {
  if (bytes.length > MAX_MESSAGE_BYTES)
    throw badMessage(`${bytes.length} bytes is over the ${MAX_MESSAGE_BYTES}-byte limit`);
  let value: unknown;
  try {
    value = decode(bytes, {
      maxStrLength: MAX_NAME_BYTES,
      maxBinLength: 0,
      maxExtLength: 0,
      maxMapLength: 0,
      maxArrayLength: MAX_RUNS,
    });
  } catch (err) {
    throw badMessage(`not valid msgpack (${(err as Error).message})`);
  }
  if (!Array.isArray(value) || value[0] !== WIRE_FORMAT) throw badMessage("not a lease message of format 1");
  const fingerprint = fingerprints.find((f) => f === value[1]);
  if (fingerprint === undefined) {
    throw new WeftError(
      "LEASE_RING_MISMATCH",
      `a peer's lease message is for network config ${String(value[1])}, ours is ${fingerprints.join(" and ")}: every node needs the same Network, SubnetLen, SubnetMin and SubnetMax (and IPv6 keys)`,
    );
  }
  return { fingerprint, message: decodeBody(value) };
}

function decodeBody(value: unknown[]): LeaseMessage {
  const [, , kind, a, b, c] = value as unknown[];
  const expectLength = (n: number): void => {
    if (value.length !== n)
      throw badMessage(`kind ${String(kind)} needs ${n} fields, got ${(value as unknown[]).length}`);
  };
  switch (kind) {
    case KIND.state:
      expectLength(4);
      return { kind: "state", ring: ringFromWire(a) };
    case KIND.request:
      expectLength(4);
      return { kind: "request", id: requestId(a) };
    case KIND.reply:
      expectLength(6);
      if (typeof b !== "boolean") throw badMessage("reply.granted is not a boolean");
      return { kind: "reply", id: requestId(a), granted: b, ring: ringFromWire(c) };
    case KIND.reclaim:
      expectLength(4);
      return { kind: "reclaim", node: nodeName(a, badMessage) };
    default:
      throw badMessage(`unknown kind ${String(kind)}`);
  }
}

export function toPlainRing(ring: RingState): PlainRing {
  const owners: string[] = [];
  const index = new Map<string, number>();
  const runs = ring.runs.map((r): [number, number, number, number, 0 | 1] => {
    let i = index.get(r.owner);
    if (i === undefined) {
      i = owners.push(r.owner) - 1;
      index.set(r.owner, i);
    }
    return [r.start, r.count, i, r.version, r.leased ? 1 : 0];
  });
  return { seeds: ring.seeds === null ? null : [...ring.seeds], owners, runs };
}

/** Checks the types and bounds of a plain ring (the ring checks overlap and its own size). */
/** Checks the types and bounds of a plain ring (the ring checks overlap and its own size). */
export function fromPlainRing(value: unknown, fail: (why: string) => WeftError): RingState {
  if (typeof value !== "object" || value === null) throw fail("ring is not an object");
  const { seeds, owners, runs } = value as Record<string, unknown>;
  if (seeds !== null && (!Array.isArray(seeds) || seeds.length === 0 || !seeds.every(isName))) {
    throw fail("ring.seeds is not null or a list of node names");
  }
  if (!Array.isArray(owners) || !owners.every(isName)) throw fail("ring.owners is not a list of node names");
  if (!Array.isArray(runs) || runs.length > MAX_RUNS) throw fail(`ring.runs is not a list of at most ${MAX_RUNS} runs`);
  const out: RingRun[] = runs.map((run, i) => {
    if (!Array.isArray(run) || run.length !== 5)
      throw fail(`ring run ${i} is not [start, count, owner, version, leased]`);
    const [start, count, owner, version, leased] = run as unknown[];
    if (
      !isInt(start, 0, MAX_SLOTS - 1) ||
      !isInt(count, 1, MAX_SLOTS) ||
      !isInt(owner, 0, owners.length - 1) ||
      !isInt(version, 1, Number.MAX_SAFE_INTEGER) ||
      (leased !== 0 && leased !== 1)
    ) {
      throw fail(`ring run ${i} has a field out of range`);
    }
    return { start, count, owner: owners[owner] as string, version, leased: leased === 1 };
  });
  return { seeds: seeds === null ? null : (seeds as string[]), runs: out };
}

/** On the wire the plain ring is an array (msgpack maps are refused, they cost name bytes). */
function ringToWire(ring: RingState): unknown[] {
  const p = toPlainRing(ring);
  return [p.seeds, p.owners, p.runs];
}

function ringFromWire(v: unknown): RingState {
  if (!Array.isArray(v) || v.length !== 3) throw badMessage("ring is not [seeds, owners, runs]");
  return fromPlainRing({ seeds: v[0], owners: v[1], runs: v[2] }, badMessage);
}

function requestId(v: unknown): number {
  if (!isInt(v, 0, 0xffffffff)) throw badMessage("request id is not a 32-bit number");
  return v;
}

export function nodeName(v: unknown, fail: (why: string) => WeftError): string {
  if (!isName(v)) throw fail("node name is not a non-empty string of at most 255 bytes");
  return v;
}

function isName(v: unknown): v is string {
  return typeof v === "string" && v.length > 0 && Buffer.byteLength(v) <= MAX_NAME_BYTES;
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
}

function badMessage(why: string): WeftError {
  return new WeftError("LEASE_BAD_MESSAGE", `dropped a lease message: ${why}`);
}
