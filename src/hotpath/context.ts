// A dataplane context (assembly/context.ts) with its two counter blocks, and reading the counters
// back by verdict name.
import type { Arena } from "./arena.js";
import type { HotPath } from "./module.js";

export interface ContextOptions {
  /** Route table offset (RouteTable.base). */
  routes: number;
  vni: number;
  /** This node's tunnel address, source of the ICMP errors it sends (number). */
  localAddr: number;
  /** This node's VTEP MAC, 6 bytes. */
  mac: Uint8Array;
}

/** Packets per verdict name plus forwarded bytes, for one direction. */
export interface DirectionCounters {
  packets: Record<string, bigint>;
  bytesForwarded: bigint;
}

export class DataplaneContext {
  readonly ptr: number;
  readonly countersTx: number;
  readonly countersRx: number;
  private readonly slots: number;

  constructor(private readonly hp: HotPath, arena: Arena, opts: ContextOptions) {
    this.slots = hp.constant("COUNTER_SLOTS");
    const blockBytes = hp.constant("COUNTER_BLOCK_BYTES");
    this.ptr = arena.alloc(hp.constant("CTX_BYTES"));
    this.countersTx = arena.alloc(blockBytes);
    this.countersRx = arena.alloc(blockBytes);
    hp.bytes().fill(0, this.countersTx, this.countersTx + blockBytes);
    hp.bytes().fill(0, this.countersRx, this.countersRx + blockBytes);
    const m = opts.mac;
    hp.fn.contextInit(
      this.ptr, opts.routes, this.countersTx, this.countersRx, opts.vni, opts.localAddr,
      (m[0] << 8) | m[1], ((m[2] << 24) | (m[3] << 16) | (m[4] << 8) | m[5]) >>> 0,
    );
  }

  tx(): DirectionCounters {
    return this.read(this.countersTx);
  }

  rx(): DirectionCounters {
    return this.read(this.countersRx);
  }

  private read(block: number): DirectionCounters {
    const view = new BigUint64Array(this.hp.memory.buffer, block, this.slots);
    const names = this.hp.verdictNames();
    const packets: Record<string, bigint> = {};
    names.forEach((name, code) => (packets[name] = view[code]));
    return { packets, bytesForwarded: view[this.hp.constant("COUNTER_BYTES_FORWARDED")] };
  }
}
