// The inner packet's flow as one 32-bit hash: addresses, protocol and ports of TCP/UDP, the echo
// identifier of ICMP and ICMPv6 echoes (as the receive side's steering program takes it, so one
// ping is one flow). Fragments after the first and unknown protocols hash on addresses and
// protocol only. The flow queue buckets by it; the send path tags single datagrams with it so
// that GSO trains carry one flow each (offload-send.ts). The flow queue seeds it with a random
// value per queue, as fq_codel perturbs its hash, so that a pod cannot pick flows that share a
// victim flow's bucket; the tags need no secret and use the default seed.

/** The seed of flows hashed without one of their own (the send path's flow tags). */
export const FLOW_HASH_SEED: u32 = 0x5bd1e995;

@inline function mix(h: u32, w: u32): u32 {
  return rotl<u32>(h ^ w, 13) * 0x9e3779b1;
}

/** Ports of TCP/UDP, the identifier of an ICMP (`icmp` = 1 or 58) echo, else 0. */
@inline function transportKey(t: usize, rest: i32, proto: u32, icmp: u32): u32 {
  if ((proto == 6 || proto == 17) && rest >= 4) return load<u32>(t);
  if (proto == icmp && rest >= 6) return <u32>load<u16>(t + 4);
  return 0;
}

/** The flow of the IP packet of `len` bytes at `p`, well mixed in all 32 bits. */
export function flowHash(p: usize, len: i32, seed: u32 = FLOW_HASH_SEED): u32 {
  let h = seed;
  const version = len > 0 ? <u32>load<u8>(p) >> 4 : 0;
  if (version == 4 && len >= 20) {
    const ihl = (<i32>(load<u8>(p) & 15)) << 2;
    const proto = <u32>load<u8>(p + 9);
    h = mix(mix(mix(h, load<u32>(p + 12)), load<u32>(p + 16)), proto);
    const fragOffset = bswap<u16>(load<u16>(p + 6)) & 0x1fff;
    if (fragOffset == 0 && ihl >= 20) h = mix(h, transportKey(p + <usize>ihl, len - ihl, proto, 1));
  } else if (version == 6 && len >= 40) {
    const next = <u32>load<u8>(p + 6);
    for (let i = 8; i < 40; i += 4) h = mix(h, load<u32>(p + <usize>i));
    h = mix(mix(h, next), transportKey(p + 40, len - 40, next, 58));
  }
  h ^= h >> 16;
  return h * 0x85ebca6b;
}
