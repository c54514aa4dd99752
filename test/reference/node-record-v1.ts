// Reference: how agents released before NO_BACKEND (src/control/node-record.ts up to e949b54) read
// a node record, kept here so that the tests can show what such a peer makes of today's records
// during a rolling upgrade. Frozen on purpose: it must not follow src/.
//
// The record is a msgpack array [1, leaseMeta, announcement] or, dual-stack, [1, leaseMeta,
// announcement, underlay6, announcement6]; leaseMeta is a bin holding [1, subnet4, subnet6?]. An
// announcement is null (none: the peer keeps the last one it had) or [type, vtepMac, port, vni,
// gbp], of which a slot of the wrong kind is left out. Anything else, maps, trailing bytes and
// out-of-range ports included, makes the whole record unreadable: the member is then no peer of
// either family, and its last announcements are forgotten.
import { decode } from "@msgpack/msgpack";

const TYPES: readonly unknown[] = ["vxlan", "host-gw", "udp", "wasm-vxlan"];

export interface RefAnnouncement {
  type: string;
  vtepMac?: string;
  port?: number;
  vni?: number;
  gbp?: boolean;
}

export interface RefRecord {
  subnet: string | null;
  subnet6?: string | null;
  backend?: RefAnnouncement;
  underlay6?: string;
  backend6?: RefAnnouncement;
}

const LIMITS = { maxStrLength: 64, maxBinLength: 256, maxArrayLength: 5, maxMapLength: 0, maxExtLength: 0 };

/** null: no announcement; undefined: the record is unreadable. */
function refAnnouncement(a: unknown): RefAnnouncement | null | undefined {
  if (a === null) return null;
  if (!Array.isArray(a) || a.length !== 5 || !TYPES.includes(a[0])) return undefined;
  const out: RefAnnouncement = { type: a[0] as string };
  if (typeof a[1] === "string") out.vtepMac = a[1];
  if (typeof a[2] === "number") {
    if (!Number.isInteger(a[2]) || a[2] < 1 || a[2] > 65535) return undefined;
    out.port = a[2];
  }
  if (typeof a[3] === "number") out.vni = a[3];
  if (typeof a[4] === "boolean") out.gbp = a[4];
  return out;
}

function refLease(bytes: Uint8Array): Array<string | null> | undefined {
  let v: unknown;
  try {
    v = decode(bytes, { ...LIMITS, maxBinLength: 0, maxArrayLength: 3 });
  } catch {
    return undefined;
  }
  if (!Array.isArray(v) || v.length < 2 || v[0] !== 1) return undefined;
  const subnets = v.slice(1);
  return subnets.every((s) => s === null || typeof s === "string") ? subnets : undefined;
}

/** What an agent before NO_BACKEND reads from `meta`; undefined where it drops the member. */
export function refDecodeNodeRecordV1(meta: Uint8Array): RefRecord | undefined {
  let v: unknown;
  try {
    v = decode(meta, LIMITS);
  } catch {
    return undefined;
  }
  if (!Array.isArray(v) || ![3, 5].includes(v.length) || v[0] !== 1 || !(v[1] instanceof Uint8Array)) return undefined;
  const subnets = refLease(v[1]);
  const backend = refAnnouncement(v[2]);
  if (!subnets || backend === undefined) return undefined;
  const out: RefRecord = { subnet: subnets[0] };
  if (backend) out.backend = backend;
  if (v.length === 3) return out;
  const backend6 = refAnnouncement(v[4]);
  if (typeof v[3] !== "string" || backend6 === undefined) return undefined;
  out.subnet6 = subnets[1] ?? null;
  out.underlay6 = v[3];
  if (backend6) out.backend6 = backend6;
  return out;
}
