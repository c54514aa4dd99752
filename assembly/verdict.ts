// Drop reasons. Every dropped packet gets one of these codes in its descriptor's VERDICT field and
// bumps the matching counter (counters.ts). The TypeScript side reads the names from the module's
// exports (every export named DROP_*), so this file is the single list.

export const VERDICT_FORWARD: i32 = 0;
/** Packet turned into an ICMP error addressed back to its sender (udp backend, no route). */
export const VERDICT_REPLY: i32 = 1;

export const DROP_TOO_SHORT: i32 = 2;
export const DROP_VXLAN_FLAGS: i32 = 3;
export const DROP_VXLAN_VNI: i32 = 4;
export const DROP_NOT_OUR_MAC: i32 = 5;
export const DROP_ARP_BROADCAST: i32 = 6;
export const DROP_ETHERTYPE: i32 = 7;
export const DROP_IP_VERSION: i32 = 8;
export const DROP_IPV4_IHL: i32 = 9;
export const DROP_IP_LENGTH: i32 = 10;
export const DROP_IPV4_CHECKSUM: i32 = 11;
export const DROP_TTL_EXHAUSTED: i32 = 12;
export const DROP_NO_ROUTE: i32 = 13;
/** The route's next hop record is not (or no longer) valid. */
export const DROP_NO_NEXT_HOP: i32 = 14;
/** An IPv6 packet where the context has no IPv6 route table (udp backend, wasm-vxlan without IPv6). */
export const DROP_IPV6_UNROUTED: i32 = 15;
/** Descriptor points outside memory or lacks headroom: a caller bug, never a packet's fault. */
export const DROP_BAD_DESCRIPTOR: i32 = 16;
/** Anti-spoofing: the inner source lies in no peer's subnet. */
export const DROP_UNKNOWN_SOURCE: i32 = 17;
/** Anti-spoofing: the inner source lies in a peer's subnet, but the packet came from elsewhere. */
export const DROP_SPOOFED: i32 = 18;
/**
 * Offloads: a virtio_net_hdr the send path cannot act on (unknown GSO type, bad checksum offsets),
 * or a super-packet it cannot segment (an IPv6 extension header other than hop-by-hop or
 * destination options in front of TCP/UDP, or not ending where csum_start says).
 */
export const DROP_OFFLOAD_HEADER: i32 = 19;
/** Offloads: a super-packet whose segments exceed the output slot, or coalescing output space ran out. */
export const DROP_OFFLOAD_SIZE: i32 = 20;

/** An ICMP or ICMPv6 error (a REPLY) the worker's rate limit withheld (packet/icmp-rate.ts). */
export const DROP_ICMP_RATE_LIMITED: i32 = 21;

/** One past the highest code; the counters block holds this many drop counters. */
export const VERDICT_COUNT: i32 = 22;
