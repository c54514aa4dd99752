// A hot path set up the way a worker has it (shared memory, route table, context, one batch),
// with helpers that load packets into the batch and read results back by slot.
import { Arena } from "../../src/hotpath/arena.js";
import { PacketBatch } from "../../src/hotpath/batch.js";
import { DataplaneContext } from "../../src/hotpath/context.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable, type RouteTableSize } from "../../src/hotpath/route-table.js";

export interface Rig {
  hp: HotPath;
  arena: Arena;
  routes: RouteTable;
  ctx: DataplaneContext;
  batch: PacketBatch;
  verdicts: string[];
}

export function makeRig(opts: {
  vni: number;
  localAddr: number;
  mac: Uint8Array;
  size?: RouteTableSize;
  batchSize?: number;
  stride?: number;
}): Rig {
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  const routes = new RouteTable(hp, arena, opts.size ?? { tbl8Groups: 64, maxRules: 1024, maxNextHops: 256 });
  const ctx = new DataplaneContext(hp, arena, { routes: routes.base, vni: opts.vni, localAddr: opts.localAddr, mac: opts.mac });
  const batch = new PacketBatch(hp, arena, opts.batchSize ?? 64, opts.stride ?? 2048);
  return { hp, arena, routes, ctx, batch, verdicts: hp.verdictNames() };
}

/** What one descriptor holds after a hot-path call. */
export interface SlotResult {
  slot: number;
  verdict: string;
  bytes: Uint8Array;
  addr: number;
  port: number;
}

/** Resets the batch and copies packets into its slots (the addon's job in production). */
export function loadBatch(rig: Rig, packets: Uint8Array[]): void {
  const { batch, hp } = rig;
  batch.reset();
  const d = batch.descView();
  const mem = hp.bytes();
  const f = fields(hp);
  packets.forEach((p, i) => {
    if (p.length > batch.stride - hp.constant("HEADROOM")) throw new RangeError("test packet larger than a slot");
    mem.set(p, d[i * f.stride + f.off]);
    d[i * f.stride + f.len] = p.length;
  });
}

/** Descriptor field indices (in i32 units) as the module defines them. */
function fields(hp: HotPath) {
  const at = (name: string) => hp.constant(name) >> 2;
  return {
    stride: at("DESC_BYTES"), off: at("DESC_OFF"), len: at("DESC_LEN"), addr: at("DESC_ADDR"),
    port: at("DESC_PORT"), verdict: at("DESC_VERDICT"),
  };
}

/** Reads the first n descriptors back, each tagged with the slot it points into. */
export function readBatch(rig: Rig, n: number): SlotResult[] {
  const { batch, hp, verdicts } = rig;
  const d = batch.descView();
  const mem = hp.bytes();
  const f = fields(hp);
  const out: SlotResult[] = [];
  for (let i = 0; i < n; i++) {
    const at = i * f.stride;
    const off = d[at + f.off];
    out.push({
      slot: Math.floor((off - batch.slots) / batch.stride),
      verdict: verdicts[d[at + f.verdict]],
      bytes: mem.slice(off, off + Math.max(0, d[at + f.len])),
      addr: d[at + f.addr] >>> 0,
      port: d[at + f.port],
    });
  }
  return out;
}
