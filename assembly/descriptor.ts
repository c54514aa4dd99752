// The batch descriptor: the one format shared by the native I/O addon (native/), the Wasm hot
// path and the TypeScript dataplane. A batch is an array of descriptors, 8 x i32 each, that point
// into one buffer (the Wasm memory). Reads fill OFF/LEN (and ADDR/PORT for sockets); the hot path
// rewrites them in place; writes send LEN bytes at OFF (to ADDR:PORT for sockets).
// The addon keeps a copy of these numbers; a test checks that the two agree.

export const DESC_BYTES: i32 = 32;
/** Byte offset of the packet's first byte in the buffer. */
export const DESC_OFF: i32 = 0;
/** Bytes the slot can hold from OFF on (the read limit). */
export const DESC_CAP: i32 = 4;
/** Packet length in bytes. */
export const DESC_LEN: i32 = 8;
/** IPv4 peer address as a number (198.18.0.1 = 0xC6120001): source on receive, target on send. */
export const DESC_ADDR: i32 = 12;
/** UDP port of the peer, host order. */
export const DESC_PORT: i32 = 16;
/** Per-packet flags: bits 0..15 the GSO segment size (offloads), DESC_FLAG_ADDR6, the flow tag. */
export const DESC_FLAGS: i32 = 20;
/**
 * ADDR is not an IPv4 address but the offset in memory of a 16-byte IPv6 address (the peer's
 * underlay is IPv6), in the slot's headroom: the destination on send (the next hop's, copied at
 * lookup, resolve.ts), the source on receive.
 */
export const DESC_FLAG_ADDR6: i32 = 0x10000;
/**
 * FLAGS bits 17..31 of a single datagram to send (segment size 0): a tag of its inner packet's
 * flow, 1..0x7fff (0: no tag). The addon joins consecutive single datagrams into one UDP GSO train
 * only when their tags match: the peer's reuseport program steers a whole train by its first
 * datagram, so a train of several flows would move all but one off the worker that owns them.
 */
export const DESC_FLOW_TAG_SHIFT: i32 = 17;
/** Hot-path verdict: 0 = forward, otherwise a drop reason from verdict.ts. */
export const DESC_VERDICT: i32 = 24;
/** Hot-path side result: next-hop index after encapsulation, flow hash for steering. */
export const DESC_AUX: i32 = 28;

/**
 * Bytes every slot keeps free in front of OFF, for what is written there in place. Send path: at
 * the slot's start the packet's 12-byte vnet header parked (offload-send.ts), then a forwarded
 * packet's next hop's 16-byte IPv6 underlay address (resolve.ts); in front of OFF either
 * encapsulation (22 bytes of VXLAN and inner Ethernet) or an ICMP error's headers (28 bytes of
 * IPv4 and ICMP, 48 of IPv6 and ICMPv6) behind a 12-byte vnet header. Receive path: an IPv6
 * sender's 16-byte address at the slot's start (the addon).
 */
export const HEADROOM: i32 = 64;

/** Largest batch one call handles (also the addon's limit). */
export const MAX_BATCH: i32 = 256;

@inline export function descPtr(descs: usize, i: i32): usize {
  return descs + ((<usize>i) << 5);
}
