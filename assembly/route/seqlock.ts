// Publication of route and next-hop updates to reader threads: a seqlock on the generation counter
// in the table header. Lookups take no lock and write nothing shared, so any number of workers can
// read while one writer updates.
//
// Writer (one at a time; callers serialize writers, e.g. only the control thread writes):
//   writeBegin (generation becomes odd) -> plain stores -> writeEnd (generation becomes even).
// Reader, around a whole batch:
//   gen = routeReadBegin(t)          spins while a write is in progress, returns the even generation
//   ... lookups, copy out what is needed (next-hop fields) ...
//   if (!routeReadValid(t, gen)) redo the read phase; the results of a changed generation are void.
// A reader racing a writer may see a half-applied update, but only ever values that the writer
// stored whole (aligned u32 stores of entries that are each consistent on their own), so no read
// goes out of bounds; the generation check then discards what it saw. Readers must not act on
// (write out) results before routeReadValid said yes.
import { H_GENERATION } from "./layout";

/** Start of a read phase: the current even generation, waiting out a write in progress. */
@inline export function routeReadBegin(t: usize): u32 {
  let gen = atomic.load<u32>(t, H_GENERATION);
  while (gen & 1) gen = atomic.load<u32>(t, H_GENERATION);
  return gen;
}

/** End of a read phase: true if no write began since routeReadBegin returned gen. */
@inline export function routeReadValid(t: usize, gen: u32): bool {
  // The phase's plain loads must complete before this load. x86-64 (TSO; V8 keeps Wasm memory
  // accesses in program order) guarantees it. Weakly ordered CPUs (arm64) would need an
  // atomic.fence here, which the toolchain cannot emit yet: assemblyscript 0.28 builds fences that
  // binaryen 131 rejects as "unordered" (binaryen PR 8845 added fence orderings).
  return atomic.load<u32>(t, H_GENERATION) == gen;
}

/**
 * Start of a read phase over an IPv4 and an IPv6 table (route6 shares this header layout), either
 * 0 when absent: both generations, IPv4's in the low half.
 */
@inline export function tablesReadBegin(t: usize, t6: usize): u64 {
  const gen: u32 = t != 0 ? routeReadBegin(t) : 0;
  const gen6: u32 = t6 != 0 ? routeReadBegin(t6) : 0;
  return ((<u64>gen6) << 32) | <u64>gen;
}

/** End of a read phase over both tables: true if neither changed since tablesReadBegin returned gens. */
@inline export function tablesReadValid(t: usize, t6: usize, gens: u64): bool {
  return (t == 0 || routeReadValid(t, <u32>gens)) && (t6 == 0 || routeReadValid(t6, <u32>(gens >> 32)));
}

export function writeBegin(t: usize): void {
  atomic.add<u32>(t, 1, H_GENERATION);
  // Readers must see the odd generation before any store of the update: x86-64's locked add is a
  // full barrier; on arm64 this acquire load, ordered after the add's release, holds the stores back.
  atomic.load<u32>(t, H_GENERATION);
}

export function writeEnd(t: usize): void {
  // A sequentially consistent add: every store of the update is visible before the even value.
  atomic.add<u32>(t, 1, H_GENERATION);
}
