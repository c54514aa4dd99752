// Making the kernel's routes, neighbour and FDB entries match what a backend wants: compare what
// `ip -json` / `bridge -json` show with the wanted entries, then write only the difference, in
// flannel's order — a peer's neighbour entry, then its FDB entry, then its route; removal the
// other way round — with at most five iproute2 calls however many peers change at once.
import type { BatchFailure, Kernel } from "./iproute.js";
import {
  FDB,
  fdbRemoval,
  NEIGH,
  ROUTE,
  type EntryKind,
  type FdbEntry,
  type NeighEntry,
  type RouteEntry,
} from "./entries.js";

export interface EntrySets {
  routes: RouteEntry[];
  neighs: NeighEntry[];
  fdbs: FdbEntry[];
}

/** What a backend wants in the kernel for one peer (a route always; vxlan adds neighbour and FDB entries). */
export interface PeerEntries {
  neigh?: NeighEntry;
  fdb?: FdbEntry;
  route: RouteEntry;
}

export const emptyEntrySets = (): EntrySets => ({ routes: [], neighs: [], fdbs: [] });

export function addPeerEntries(sets: EntrySets, e: PeerEntries): void {
  sets.routes.push(e.route);
  if (e.neigh) sets.neighs.push(e.neigh);
  if (e.fdb) sets.fdbs.push(e.fdb);
}

/** The scope keys ("<kind> <key>", as Scope sees them) of a peer's entries. */
export function peerEntryKeys(e: PeerEntries): string[] {
  return [
    `route ${ROUTE.key(e.route)}`,
    ...(e.neigh ? [`neigh ${NEIGH.key(e.neigh)}`] : []),
    ...(e.fdb ? [`fdb ${FDB.key(e.fdb)}`] : []),
  ];
}

export interface KindChanges<E> {
  /** Present in the kernel (and in scope) but not wanted. */
  remove: E[];
  /** Wanted but missing or different in the kernel. */
  put: E[];
}

export interface EntryChanges {
  routes: KindChanges<RouteEntry>;
  neighs: KindChanges<NeighEntry>;
  fdbs: KindChanges<FdbEntry>;
}

/** Only keys for which this says yes are touched (both ways); every key when absent. */
export type Scope = (kind: EntryKind<never>["name"], key: string) => boolean;

export function diffEntries(want: EntrySets, have: EntrySets, scope?: Scope): EntryChanges {
  return {
    routes: diffKind(ROUTE, want.routes, have.routes, scope),
    neighs: diffKind(NEIGH, want.neighs, have.neighs, scope),
    fdbs: diffKind(FDB, want.fdbs, have.fdbs, scope),
  };
}

function diffKind<E>(kind: EntryKind<E>, want: E[], have: E[], scope?: Scope): KindChanges<E> {
  const inScope = (e: E) => !scope || scope(kind.name, kind.key(e));
  const wanted = new Map(want.map((e) => [kind.key(e), e]));
  const present = new Map(have.map((e) => [kind.key(e), e]));
  return {
    remove: have.filter((e) => inScope(e) && !wanted.has(kind.key(e))),
    put: want.filter((e) => {
      const now = present.get(kind.key(e));
      return inScope(e) && (!now || !kind.same(now, e));
    }),
  };
}

/** The scope keys of every entry a change set touches. */
export function changedKeys(c: EntryChanges): string[] {
  const keys = <E>(kind: EntryKind<E>, k: KindChanges<E>) =>
    [...k.remove, ...k.put].map((e) => `${kind.name} ${kind.key(e)}`);
  return [...keys(ROUTE, c.routes), ...keys(NEIGH, c.neighs), ...keys(FDB, c.fdbs)];
}

/**
 * Writes the changes in flannel's order. Every call runs with `-force`, so a refused line does not
 * hold up the others; the refused lines come back (the next reconcile tries them again).
 */
export async function applyChanges(kernel: Kernel, c: EntryChanges): Promise<BatchFailure[]> {
  return [
    ...(await kernel.ipBatchForce(c.routes.remove.map(ROUTE.del))),
    ...(await kernel.bridgeBatchForce(c.fdbs.remove.flatMap(fdbRemoval))),
    ...(await kernel.ipBatchForce([...c.neighs.remove.map(NEIGH.del), ...c.neighs.put.map(NEIGH.replace)])),
    ...(await kernel.bridgeBatchForce(c.fdbs.put.map(FDB.replace))),
    ...(await kernel.ipBatchForce(c.routes.put.map(ROUTE.replace))),
  ];
}
