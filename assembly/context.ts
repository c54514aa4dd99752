// A dataplane context: what one worker's batches need besides the packets. It lives in memory
// (64 bytes) like everything else, so the module itself holds no state.

/** VXLAN network identifier (24 bits). */
export const CTX_VNI: i32 = 0;
/** The worker's ICMP error bucket (packet/icmp-rate.ts), shared by the contexts it serves. */
export const CTX_ICMP_BUCKET: i32 = 4;
/** This node's VTEP MAC, 6 bytes in wire order. */
export const CTX_MAC: i32 = 8;
/** IPv4 route table (assembly/route/table.ts); 0: none, IPv4 packets find no route (an IPv6 dataplane's). */
export const CTX_ROUTES: i32 = 16;
/** Counter blocks (counters.ts) of the send path (TUN to socket) and the receive path. */
export const CTX_COUNTERS_TX: i32 = 20;
export const CTX_COUNTERS_RX: i32 = 24;
/** CTX_FLAG_* bits. */
export const CTX_FLAGS: i32 = 28;
/** Per-peer counters (counters.ts) indexed by next hop, per direction; 0 = none. */
export const CTX_PEER_COUNTERS_TX: i32 = 32;
export const CTX_PEER_COUNTERS_RX: i32 = 36;
/** Next-hop indices the per-peer counter arrays cover. */
export const CTX_PEER_SLOTS: i32 = 40;
/** IPv6 route table (assembly/route6/table.ts); 0: IPv6 packets are not routed (DROP_IPV6_UNROUTED). */
export const CTX_ROUTES6: i32 = 44;
/** This node's IPv6 tunnel address, 16 bytes in network order: source of its ICMPv6 errors. */
export const CTX_LOCAL_ADDR6: i32 = 48;
export const CTX_BYTES: i32 = 64;

/**
 * Accept a received packet only from a known peer's underlay address and only if its inner
 * source lies in that peer's subnet (which flannel does not check).
 */
export const CTX_FLAG_ANTI_SPOOF: u32 = 1;
/**
 * The TUN device takes UDP super-packets (USO, Linux 6.2): the receive path merges UDP datagrams
 * of one flow as it merges TCP segments (udp-coalesce.ts).
 */
export const CTX_FLAG_USO: u32 = 2;

/** Fills a context. The MAC comes as its first 2 bytes (macHi16) and last 4 bytes (macLo32). */
export function contextInit(
  ctx: usize,
  routes: usize,
  countersTx: usize,
  countersRx: usize,
  vni: u32,
  macHi16: u32,
  macLo32: u32,
  flags: u32,
  icmpBucket: usize,
): void {
  memory.fill(ctx, 0, CTX_BYTES);
  store<u32>(ctx + CTX_VNI, vni & 0xffffff);
  store<u32>(ctx + CTX_ICMP_BUCKET, <u32>icmpBucket);
  store<u16>(ctx + CTX_MAC, bswap<u16>(<u16>macHi16));
  store<u32>(ctx + CTX_MAC + 2, bswap<u32>(macLo32));
  store<u32>(ctx + CTX_ROUTES, <u32>routes);
  store<u32>(ctx + CTX_COUNTERS_TX, <u32>countersTx);
  store<u32>(ctx + CTX_COUNTERS_RX, <u32>countersRx);
  store<u32>(ctx + CTX_FLAGS, flags);
}

/** Points the context at per-peer counter arrays (PEER_COUNTER_BYTES per next-hop index). */
export function contextSetPeerCounters(ctx: usize, tx: usize, rx: usize, slots: u32): void {
  store<u32>(ctx + CTX_PEER_COUNTERS_TX, <u32>tx);
  store<u32>(ctx + CTX_PEER_COUNTERS_RX, <u32>rx);
  store<u32>(ctx + CTX_PEER_SLOTS, slots);
}

/** Lets the context route IPv6 too: its route table and its 16-byte tunnel address (copied from a). */
export function contextSetIpv6(ctx: usize, routes6: usize, a: usize): void {
  store<u32>(ctx + CTX_ROUTES6, <u32>routes6);
  store<u64>(ctx + CTX_LOCAL_ADDR6, load<u64>(a));
  store<u64>(ctx + CTX_LOCAL_ADDR6 + 8, load<u64>(a, 8));
}

@inline export function ctxIcmpBucket(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_ICMP_BUCKET);
}

@inline export function ctxRoutes6(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_ROUTES6);
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

@inline export function ctxPeerCountersTx(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_PEER_COUNTERS_TX);
}

@inline export function ctxPeerCountersRx(ctx: usize): usize {
  return <usize>load<u32>(ctx + CTX_PEER_COUNTERS_RX);
}

@inline export function ctxPeerSlots(ctx: usize): u32 {
  return load<u32>(ctx + CTX_PEER_SLOTS);
}

@inline export function ctxHasFlag(ctx: usize, flag: u32): bool {
  return (load<u32>(ctx + CTX_FLAGS) & flag) != 0;
}
