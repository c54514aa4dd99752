// A node's gossip record (memberlist's node meta): its lease, as the lease layer encodes it, and
// what its backend announces (type, VTEP MAC, port, VNI). Peers program their backends from it.
import { decode, encode } from "@msgpack/msgpack";
import type { BackendAnnouncement, BackendType } from "../backends/backend.js";
import { BACKEND_TYPES } from "../backends/backend.js";
import { decodeLeaseMeta } from "./lease/delegate.js";

const RECORD_VERSION = 1;

export interface NodeRecord {
  subnet: string | null;
  backend?: BackendAnnouncement;
}

export function encodeNodeRecord(leaseMeta: Uint8Array, backend: BackendAnnouncement | undefined): Uint8Array {
  return encode([RECORD_VERSION, leaseMeta, backend ? [backend.type, backend.vtepMac ?? null, backend.port ?? null, backend.vni ?? null, backend.gbp ?? null] : null]);
}

/** Reads a record; undefined when the bytes are not one (a foreign or older node). */
export function decodeNodeRecord(meta: Uint8Array): NodeRecord | undefined {
  let v: unknown;
  try {
    v = decode(meta, { maxStrLength: 64, maxBinLength: 256, maxArrayLength: 5, maxMapLength: 0, maxExtLength: 0 });
  } catch {
    return undefined;
  }
  if (!Array.isArray(v) || v.length !== 3 || v[0] !== RECORD_VERSION || !(v[1] instanceof Uint8Array)) return undefined;
  const lease = decodeLeaseMeta(v[1]);
  if (!lease) return undefined;
  const b = v[2];
  if (b === null) return { subnet: lease.subnet };
  if (!Array.isArray(b) || b.length !== 5 || !(BACKEND_TYPES as readonly unknown[]).includes(b[0])) return undefined;
  const [type, vtepMac, port, vni, gbp] = b as [BackendType, unknown, unknown, unknown, unknown];
  return {
    subnet: lease.subnet,
    backend: {
      type,
      ...(typeof vtepMac === "string" ? { vtepMac } : {}),
      ...(typeof port === "number" ? { port } : {}),
      ...(typeof vni === "number" ? { vni } : {}),
      ...(typeof gbp === "boolean" ? { gbp } : {}),
    },
  };
}
