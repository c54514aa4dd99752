// A pool of same-size items (trie nodes, range leaf slots) in a table's region: a free list linked
// through a u32 of each freed item, and the never-used end. Its four header fields sit together
// at h (layout.ts: H6_NODES_AT.., H6_LEAVES_AT..); item 0 is never handed out (0 = none).
/** Field offsets from h (layout.ts keeps them so): where the items start, the free list's head, items handed out from the end, in use now. */
const POOL_AT: u32 = 0;
const POOL_FREE: u32 = 4;
const POOL_USED: u32 = 8;
const POOL_LIVE: u32 = 12;

@inline export function poolItem(t: usize, h: u32, bytes: u32, n: u32): usize {
  return t + load<u32>(t + h, POOL_AT) + <usize>n * bytes;
}

/** An item off the free list (linked through the u32 at `next`), else from the never-used end. */
export function poolTake(t: usize, h: u32, bytes: u32, next: u32): u32 {
  const f = t + h;
  store<u32>(f, load<u32>(f, POOL_LIVE) + 1, POOL_LIVE);
  const free = load<u32>(f, POOL_FREE);
  if (free != 0) {
    store<u32>(f, load<u32>(poolItem(t, h, bytes, free) + next), POOL_FREE);
    return free;
  }
  const n = load<u32>(f, POOL_USED) + 1;
  store<u32>(f, n, POOL_USED);
  return n;
}

export function poolGive(t: usize, h: u32, bytes: u32, next: u32, n: u32): void {
  const f = t + h;
  store<u32>(f, load<u32>(f, POOL_LIVE) - 1, POOL_LIVE);
  store<u32>(poolItem(t, h, bytes, n) + next, load<u32>(f, POOL_FREE));
  store<u32>(f, n, POOL_FREE);
}
