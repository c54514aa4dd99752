// Big-endian field access: packet headers are in network byte order, Wasm memory is little-endian.

@inline export function be16(p: usize): u32 {
  return <u32>bswap<u16>(load<u16>(p));
}

@inline export function be32(p: usize): u32 {
  return bswap<u32>(load<u32>(p));
}

@inline export function putBe16(p: usize, v: u32): void {
  store<u16>(p, bswap<u16>(<u16>v));
}

@inline export function putBe32(p: usize, v: u32): void {
  store<u32>(p, bswap<u32>(v));
}
