// A next hop's 16-byte underlay address: IPv6, or an IPv4 underlay written as ::ffff:a.b.c.d
// (RFC 4291 2.5.5.2), so one record format serves peers on either underlay.

/** Whether the 16 bytes at a are an IPv4-mapped address (then bytes 12..15 hold the IPv4). */
@inline export function underlayIsIpv4Mapped(a: usize): bool {
  return load<u64>(a) == 0 && load<u32>(a, 8) == 0xffff0000;
}
