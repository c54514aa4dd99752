// Loading the Wasm hot path (build/weft.wasm) over a shared memory, and reading its layout
// constants and verdict names from its exports, so that they are written down once, in assembly/.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { BUILD } from "../build-id.js";
import { WeftError } from "../errors.js";
import { projectFile } from "../paths.js";

/** The module's functions (pointers and sizes are numbers; see assembly/ for each). */
export interface HotPathFunctions {
  batchInit(descs: number, n: number, base: number, stride: number): void;
  checksum(p: number, len: number): number;
  checksumPartial(p: number, len: number, seed: number): number;
  contextInit(
    ctx: number,
    routes: number,
    countersTx: number,
    countersRx: number,
    vni: number,
    macHi16: number,
    macLo32: number,
    flags: number,
    icmpBucket: number,
  ): void;
  /** A full ICMP error bucket (assembly/packet/icmp-rate.ts) at b, ICMP_BUCKET_BYTES long. */
  icmpBucketInit(b: number): void;
  contextSetPeerCounters(ctx: number, tx: number, rx: number, slots: number): void;
  contextSetIpv6(ctx: number, routes6: number, addr: number): void;
  /**
   * The send path (assembly/packet/offload-send.ts): format ENCAP_VXLAN or ENCAP_NONE; vnet 1 when
   * packets have a vnet header (offloads). Returns sends | replies << 16, written to outDescs.
   */
  encapBatch(
    ctx: number,
    descs: number,
    n: number,
    format: number,
    vnet: number,
    outDescs: number,
    out: number,
    outStride: number,
  ): number;
  /** The receive path (assembly/packet/offload-receive.ts): returns the packets written to outDescs. */
  decapBatch(
    ctx: number,
    descs: number,
    n: number,
    format: number,
    vnet: number,
    scratch: number,
    outDescs: number,
    outMax: number,
    out: number,
    cap: number,
  ): number;
  /**
   * The send path's flow queue (assembly/packet/flow-queue.ts): per-flow queues over a pool of
   * slots, sparse flows first, the fattest flow dropped at its head above the limit.
   */
  fqSize(slots: number): number;
  fqInit(
    q: number,
    slots: number,
    base: number,
    stride: number,
    limit: number,
    quantum: number,
    drops: number,
    seed: number,
  ): void;
  fqCut(q: number): number;
  fqReset(q: number): number;
  fqTakeOver(q: number, descs: number, sendShortfall: number, writeShortfall: number): number;
  fqBacklog(q: number): number;
  fqSparseWaiting(q: number): number;
  fqFlowBucket(q: number, p: number, len: number): number;
  fqPrepare(q: number, descs: number, want: number): number;
  fqEnqueue(q: number, descs: number, k: number, n: number): number;
  fqDequeue(q: number, out: number, max: number): number;
  routeTableSize(tbl8Groups: number, maxRules: number, maxNextHops: number): number;
  routeTableInit(t: number, tbl8Groups: number, maxRules: number, maxNextHops: number): number;
  routeInsert(t: number, prefix: number, len: number, nh: number): number;
  routeReplace(t: number, prefix: number, len: number, nh: number): number;
  routeDelete(t: number, prefix: number, len: number): number;
  routeGet(t: number, prefix: number, len: number): number;
  routeLookup(t: number, addr: number): number;
  routeLookupBatch(t: number, addrs: number, out: number, n: number): void;
  routeCount(t: number): number;
  /** Seqlock read side (assembly/route/seqlock.ts), exported for tests of the publication protocol. */
  routeReadBegin(t: number): number;
  routeReadValid(t: number, gen: number): number;
  nextHopPtr(t: number, i: number): number;
  nextHopSet(t: number, i: number, ip: number, port: number, macHi16: number, macLo32: number): number;
  nextHopClear(t: number, i: number): number;
  /** IPv6 route table (assembly/route6/table.ts): prefixes and addresses are pointers to 16 bytes. */
  route6TableSize(maxRules: number, maxNextHops: number): number;
  route6TableInit(t: number, maxRules: number, maxNextHops: number): number;
  route6Insert(t: number, prefix: number, len: number, nh: number): number;
  route6Replace(t: number, prefix: number, len: number, nh: number): number;
  route6Delete(t: number, prefix: number, len: number): number;
  route6Get(t: number, prefix: number, len: number): number;
  route6Lookup(t: number, addr: number): number;
  route6LookupBatch(t: number, addrs: number, out: number, n: number): void;
  route6Count(t: number): number;
  /** Trie nodes in use (route6/layout.ts NODE_BYTES each): memory beyond the fixed part. */
  route6Nodes(t: number): number;
  route6Leaves(t: number): number;
  nextHop6Ptr(t: number, i: number): number;
  nextHop6Set(t: number, i: number, addr: number, port: number, macHi16: number, macLo32: number): number;
  nextHop6Clear(t: number, i: number): number;
  heapBase(): number;
}

/** Memory pages the module may use: up to 4 GiB, reserved lazily by the engine. */
const MAX_PAGES = 65536;
let compiled: WebAssembly.Module | undefined;

/**
 * build/weft.wasm, compiled once per process, by the main thread, if it is the module this build
 * recorded (build-id.ts): dataplane workers instantiate this module (passed to them), never the
 * file, which an install may have replaced since.
 */
export function hotPathModule(): WebAssembly.Module {
  if (compiled) return compiled;
  const path = projectFile("build", "weft.wasm");
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (cause) {
    throw new WeftError(
      "HOTPATH_NOT_BUILT",
      `${path} is missing; in a checkout run \`npm run build:wasm\` (npm install and npm pack run it, by prepare); an installed package has it only if it was packed after a build: reinstall from one`,
      {
        cause,
      },
    );
  }
  // The module this process's JavaScript was built with, or none: a backend started later (a
  // SIGHUP swap to a userspace one) may find another install's file, with another layout.
  const hash = createHash("sha256").update(bytes).digest("hex");
  if (BUILD.wasm !== undefined && hash !== BUILD.wasm)
    throw new WeftError(
      "HOTPATH_BUILD_MISMATCH",
      `${path} is not the module weft build ${BUILD.id}, the running agent's, was built with (its sha256 is ${hash}, the build recorded ${BUILD.wasm}): weft was installed anew under the running agent, and the old code over a new module would forward wrongly, so this userspace backend does not start; restart the agent (systemctl restart weft) to run the new build (in a checkout where weft.wasm was built by hand with asc, run \`npm run build:info\` first)`,
    );
  return (compiled = new WebAssembly.Module(bytes));
}

/** A new shared memory for the hot path; worker threads receive it and instantiate over it. */
export function createHotPathMemory(initialPages = 16): WebAssembly.Memory {
  return new WebAssembly.Memory({ initial: initialPages, maximum: MAX_PAGES, shared: true });
}

/** One instance of the hot path over `memory`, with the constants its exports define. */
export class HotPath {
  readonly fn: HotPathFunctions;
  private readonly globals: Map<string, number>;
  private u8 = new Uint8Array(0);

  constructor(
    readonly memory: WebAssembly.Memory,
    module = hotPathModule(),
  ) {
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    this.fn = instance.exports as unknown as HotPathFunctions;
    this.globals = new Map();
    for (const [name, value] of Object.entries(instance.exports)) {
      if (value instanceof WebAssembly.Global) this.globals.set(name, Number(value.value));
    }
  }

  /** A constant the module exports (DESC_OFF, HEADROOM, DROP_NO_ROUTE, ...). */
  constant(name: string): number {
    const v = this.globals.get(name);
    if (v === undefined)
      throw new WeftError(
        "HOTPATH_NO_CONSTANT",
        `the hot path exports no constant ${name}; rebuild with \`npm run build:wasm\``,
      );
    return v;
  }

  /** The `format` argument of encapBatch/decapBatch for a wire format. */
  wireFormat(format: "vxlan" | "udp"): number {
    return this.constant(format === "vxlan" ? "ENCAP_VXLAN" : "ENCAP_NONE");
  }

  /** Names of verdict codes (index = code): FORWARD, REPLY, then the drop reasons. */
  verdictNames(): string[] {
    const names: string[] = [];
    for (const [name, code] of this.globals) {
      const m = /^(?:VERDICT|DROP)_(.+)$/.exec(name);
      if (m && name !== "VERDICT_COUNT") names[code] = m[1];
    }
    return names;
  }

  /** Memory as bytes; views are refreshed when the memory has grown. */
  bytes(): Uint8Array {
    if (this.u8.byteLength !== this.memory.buffer.byteLength) this.u8 = new Uint8Array(this.memory.buffer);
    return this.u8;
  }

  /** First byte after the module's static data: where regions may start. */
  heapBase(): number {
    return this.fn.heapBase();
  }
}
