// A node's gossip record (memberlist's node meta): its lease, as the lease layer encodes it, and
// what its backend announces (type, VTEP MAC, port, VNI). Peers program their backends from it.
// Per family, the announcement is absent until the backend first runs (peers keep the last one
// they heard: a restart with --keep-on-exit), or NO_BACKEND while that family's backend is down
// (peers drop their routes to the node for it).
//
// NO_BACKEND on the wire: the family's last announcement (or, if it never ran, the backend type
// alone) with "none" in the GBP slot. Agents older than NO_BACKEND read any non-boolean there as
// no GBP and keep reading the rest, so they stay on that announcement for the family (as they did
// for a down family before) and keep the other family. The first agents with NO_BACKEND sent
// `false`, which older ones refuse, dropping the node for both families; it is still read, and
// still sent when no type is known (no family has run: dropping the whole node is then right).
// Those first agents read "none" as no GBP, so to them a down family looks up: a known gap.
// test/reference/node-record-v1.ts holds the older agents' rules.
import { decode, encode } from "@msgpack/msgpack";
import type { BackendAnnouncement, BackendType } from "../backends/backend.js";
import { BACKEND_TYPES } from "../backends/backend.js";
import { decodeLeaseMeta } from "./lease/delegate.js";

const RECORD_VERSION = 1;

/** A family whose backend is down (a failed swap's failed rollback, a failed restart). */
export const NO_BACKEND = "none";
export type Announced = BackendAnnouncement | typeof NO_BACKEND;

export interface NodeRecord {
  subnet: string | null;
  /** The IPv6 subnet, on a dual-stack node. */
  subnet6?: string | null;
  backend?: Announced;
  /** On a dual-stack node: its IPv6 underlay address and what its IPv6 backend instance announces. */
  underlay6?: string;
  backend6?: Announced;
}

/** Each family's last announcement: what a down family shows agents that do not read NO_BACKEND. */
export interface LastAnnounced {
  v4?: BackendAnnouncement;
  v6?: BackendAnnouncement;
}

const fields = (a: BackendAnnouncement, gbpSlot: boolean | typeof NO_BACKEND | null) => [
  a.type,
  a.vtepMac ?? null,
  a.port ?? null,
  a.vni ?? null,
  gbpSlot,
];

function encodeAnnouncement(b: Announced | undefined, shown: BackendAnnouncement | undefined) {
  if (b === undefined) return null;
  if (b !== NO_BACKEND) return fields(b, b.gbp ?? null);
  return shown ? fields(shown, NO_BACKEND) : false;
}

function decodeAnnouncement(b: unknown): Announced | null | undefined {
  if (b === null) return null;
  if (b === false) return NO_BACKEND;
  if (!Array.isArray(b) || b.length !== 5 || !(BACKEND_TYPES as readonly unknown[]).includes(b[0])) return undefined;
  const [type, vtepMac, port, vni, gbp] = b as [BackendType, unknown, unknown, unknown, unknown];
  if (gbp === NO_BACKEND) return NO_BACKEND;
  // A port no datagram can go to makes no peer: every send to it would fail.
  if (typeof port === "number" && !(Number.isInteger(port) && port >= 1 && port <= 65535)) return undefined;
  return {
    type,
    ...(typeof vtepMac === "string" ? { vtepMac } : {}),
    ...(typeof port === "number" ? { port } : {}),
    ...(typeof vni === "number" ? { vni } : {}),
    ...(typeof gbp === "boolean" ? { gbp } : {}),
  };
}

/** The record; a dual-stack node adds its IPv6 underlay address and IPv6 announcement. `last`
 *  gives what a down family shows older agents. */
export function encodeNodeRecord(
  leaseMeta: Uint8Array,
  backend: Announced | undefined,
  v6?: { underlay: string; backend: Announced | undefined },
  last: LastAnnounced = {},
): Uint8Array {
  // Both families run the one configured backend type, so either's type stands for the other's.
  const type = (a: BackendAnnouncement | undefined) => a && { type: a.type };
  return encode([
    RECORD_VERSION,
    leaseMeta,
    encodeAnnouncement(backend, last.v4 ?? type(last.v6)),
    ...(v6 ? [v6.underlay, encodeAnnouncement(v6.backend, last.v6 ?? type(last.v4))] : []),
  ]);
}

/** Reads a record; undefined when the bytes are not one (a foreign or older node). */
export function decodeNodeRecord(meta: Uint8Array): NodeRecord | undefined {
  let v: unknown;
  try {
    v = decode(meta, { maxStrLength: 64, maxBinLength: 256, maxArrayLength: 5, maxMapLength: 0, maxExtLength: 0 });
  } catch {
    return undefined;
  }
  if (
    !Array.isArray(v) ||
    (v.length !== 3 && v.length !== 5) ||
    v[0] !== RECORD_VERSION ||
    !(v[1] instanceof Uint8Array)
  )
    return undefined;
  const lease = decodeLeaseMeta(v[1]);
  const backend = decodeAnnouncement(v[2]);
  if (!lease || backend === undefined) return undefined;
  const record: NodeRecord = { subnet: lease.subnet, ...(backend && { backend }) };
  if (v.length === 3) return record;
  const backend6 = decodeAnnouncement(v[4]);
  if (typeof v[3] !== "string" || backend6 === undefined) return undefined;
  return { ...record, subnet6: lease.subnets[1] ?? null, underlay6: v[3], ...(backend6 && { backend6 }) };
}
