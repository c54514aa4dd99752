// A dataplane context: what one worker's batches need besides the packets. It lives in memory
// (64 bytes) like everything else, so the module itself holds no state.

/** VXLAN network identifier (24 bits). */
export const CTX_VNI: i32 = 0;
/** This node's tunnel address (its subnet's network address): source of the ICMP errors it sends. */
export const CTX_LOCAL_ADDR: i32 = 4;
/** This node's VTEP MAC, 6 bytes in wire order. */
export const CTX_MAC: i32 = 8;
/** Route table (assembly/route/table.ts). */
export const CTX_ROUTES: i32 = 16;
/** Counter blocks (counters.ts) of the send path (TUN to socket) and the receive path. */
export const CTX_COUNTERS_TX: i32 = 20;
export const CTX_COUNTERS_RX: i32 = 24;
export const CTX_BYTES: i32 = 64;

/** Fills a context. The MAC comes as its first 2 bytes (macHi16) and last 4 bytes (macLo32). */
export function contextInit(
  ctx: usize, routes: usize, countersTx: usize, countersRx: usize,
  vni: u32, localAddr: u32, macHi16: u32, macLo32: u32,
): void {
  memory.fill(ctx, 0, CTX_BYTES);
  store<u32>(ctx + CTX_VNI, vni & 0xffffff);
  store<u32>(ctx + CTX_LOCAL_ADDR, localAddr);
  store<u16>(ctx + CTX_MAC, bswap<u16>(<u16>macHi16));
  store<u32>(ctx + CTX_MAC + 2, bswap<u32>(macLo32));
  store<u32>(ctx + CTX_ROUTES, <u32>routes);
  store<u32>(ctx + CTX_COUNTERS_TX, <u32>countersTx);
  store<u32>(ctx + CTX_COUNTERS_RX, <u32>countersRx);
}

@inline export function ctxRoutes(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_ROUTES);
}

@inline export function ctxCountersTx(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_COUNTERS_TX);
}

@inline export function ctxCountersRx(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_COUNTERS_RX);
}
