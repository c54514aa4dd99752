// A/B of two builds of the hot path's IPv6 route table, for changes to assembly/route6/: each
// build gets a memory of its own with the same rules and addresses, the answers are compared, and
// route6LookupBatch runs alternately on A and B in this one process, timed by the process's CPU
// time (wall clock swings with the machine's other work); medians of ROUNDS runs.
//   node dist/bench/micro/lpm6-ab.js A.wasm B.wasm
//   env CASES=random:100000,pods:10000 (default random:100000), WORK=inside|uniform (default inside), ROUNDS=7
// A baseline build of another revision, e.g. main: `git archive main assembly asconfig.json | tar
// -x -C /tmp/base && npx asc /tmp/base/assembly/index.ts --config /tmp/base/asconfig.json --target release`.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { prefixMask6, writeIpv6 } from "../../src/net/ipv6.js";
import { random32 } from "../../test/reference/lpm.js";
import { random128, randomRules6, type Rule6 } from "../../test/reference/lpm6.js";
import { podRules } from "./lpm6.js";

const POOL = 1 << 20;
const MAX_NEXT_HOPS = 4096;
const ALL = (1n << 128n) - 1n;

interface Exports {
  heapBase(): number;
  route6TableSize(maxRules: number, maxNextHops: number): number;
  route6TableInit(t: number, maxRules: number, maxNextHops: number): number;
  route6Insert(t: number, prefix: number, len: number, nh: number): number;
  route6LookupBatch(t: number, addrs: number, out: number, n: number): void;
  route6Nodes(t: number): number;
}

interface Setup {
  fn: Exports;
  memory: WebAssembly.Memory;
  t: number;
  pool: number;
  out: number;
}

function setup(file: string, rules: Rule6[], addrs: bigint[]): Setup {
  const memory = new WebAssembly.Memory({ initial: 16, maximum: 65536, shared: true });
  const module = new WebAssembly.Module(readFileSync(file));
  const fn = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Exports;
  let top = fn.heapBase();
  const alloc = (bytes: number): number => {
    const at = Math.ceil(top / 64) * 64;
    top = at + bytes;
    const pages = Math.ceil(top / 65536) - memory.buffer.byteLength / 65536;
    if (pages > 0) memory.grow(pages);
    return at;
  };
  const t = alloc(fn.route6TableSize(rules.length, MAX_NEXT_HOPS));
  if (fn.route6TableInit(t, rules.length, MAX_NEXT_HOPS) !== 0) throw new Error(`${file}: init failed`);
  const scratch = alloc(16);
  const start = process.cpuUsage();
  for (const r of rules) {
    writeIpv6(new Uint8Array(memory.buffer), scratch, r.addr);
    const code = fn.route6Insert(t, scratch, r.len, r.nh);
    if (code !== 0) throw new Error(`${file}: insert failed with ${code}`);
  }
  const used = process.cpuUsage(start);
  const region = fn.route6TableSize(rules.length, MAX_NEXT_HOPS);
  console.log(
    `${file}: ${rules.length} inserts, ${(((used.user + used.system) / rules.length) * 1000).toFixed(0)} ns each ` +
      `(CPU time, with the JS around them); region ${(region / 2 ** 20).toFixed(1)} MiB`,
  );
  const pool = alloc(POOL * 16);
  const bytes = new Uint8Array(memory.buffer);
  addrs.forEach((a, i) => writeIpv6(bytes, pool + i * 16, a));
  return { fn, memory, t, pool, out: alloc(256 * 4) };
}

/** Lookups per second of `calls` batches, by CPU time. */
function rate(s: Setup, batch: number, calls: number): number {
  let at = 0;
  const start = process.cpuUsage();
  for (let i = 0; i < calls; i++) {
    s.fn.route6LookupBatch(s.t, s.pool + at * 16, s.out, batch);
    at = (at + batch) & (POOL - 1);
  }
  const used = process.cpuUsage(start);
  return (calls * batch) / ((used.user + used.system) / 1e6);
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1];

export function lpm6Ab(fileA: string, fileB: string, cases: string, work: string, rounds: number): void {
  for (const c of cases.split(",")) {
    const [shape, count] = c.split(":");
    const prefixes = Number(count);
    const next = random32(prefixes + (shape === "pods" ? 1 : 0));
    const rules = shape === "pods" ? podRules(prefixes, next) : randomRules6(prefixes, MAX_NEXT_HOPS, next);
    const addrs = Array.from({ length: POOL }, () => {
      if (work === "uniform") return random128(next);
      const r = rules[next() % rules.length];
      return r.addr | (random128(next) & ~prefixMask6(r.len) & ALL);
    });
    const [a, b] = [setup(fileA, rules, addrs), setup(fileB, rules, addrs)];
    for (let at = 0; at < 65536; at += 256) {
      a.fn.route6LookupBatch(a.t, a.pool + at * 16, a.out, 256);
      b.fn.route6LookupBatch(b.t, b.pool + at * 16, b.out, 256);
      const [x, y] = [new Int32Array(a.memory.buffer, a.out, 256), new Int32Array(b.memory.buffer, b.out, 256)];
      const i = x.findIndex((v, k) => v !== y[k]);
      if (i >= 0) throw new Error(`A and B disagree on address ${at + i}: ${x[i]} against ${y[i]}`);
    }
    for (const batch of [64, 256]) {
      const calls = Math.round(1.5e6 / batch);
      rate(a, batch, calls >> 2);
      rate(b, batch, calls >> 2);
      const [ra, rb]: number[][] = [[], []];
      for (let i = 0; i < rounds; i++) {
        ra.push(rate(a, batch, calls));
        rb.push(rate(b, batch, calls));
      }
      const [ma, mb] = [median(ra) / 1e6, median(rb) / 1e6];
      console.log(
        `${shape} ${prefixes} ${work}, batch ${batch}: A ${ma.toFixed(1)}, B ${mb.toFixed(1)} M lookups/s, B/A ${(mb / ma).toFixed(2)}` +
          ` (nodes A ${a.fn.route6Nodes(a.t)}, B ${b.fn.route6Nodes(b.t)})`,
      );
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [fileA, fileB] = process.argv.slice(2);
  if (!fileA || !fileB) throw new Error("usage: node dist/bench/micro/lpm6-ab.js A.wasm B.wasm");
  const env = process.env;
  lpm6Ab(fileA, fileB, env.CASES ?? "random:100000", env.WORK ?? "inside", Number(env.ROUNDS ?? 7));
}
