// The Internet checksum (RFC 1071): one's complement sum of big-endian 16-bit words.
// The sum is byte-order independent up to a final byte swap (RFC 1071 §2(B)), so the loops add
// little-endian words and swap once at the end. Sixteen bytes at a time with SIMD for the body.

/** Adds len bytes at p to a running 32-bit sum of little-endian 16-bit words (not folded). */
@inline function sumWordsLE(p: usize, len: i32, acc: u64): u64 {
  let i: i32 = 0;
  if (len >= 64) {
    let v = i32x4.splat(0);
    let hi = i64x2.splat(0);
    // Each extadd lane gains < 2^17 per 16 bytes; spill to 64-bit lanes every 8 KiB so the
    // 32-bit lanes never overflow, whatever the length.
    while (i + 64 <= len) {
      let block = 0;
      while (block < 128 && i + 64 <= len) {
        const q = p + <usize>i;
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(v128.load(q)));
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(v128.load(q, 16)));
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(v128.load(q, 32)));
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(v128.load(q, 48)));
        i += 64;
        block++;
      }
      hi = i64x2.add(hi, i64x2.extend_low_i32x4_u(v));
      hi = i64x2.add(hi, i64x2.extend_high_i32x4_u(v));
      v = i32x4.splat(0);
    }
    acc += <u64>i64x2.extract_lane(hi, 0) + <u64>i64x2.extract_lane(hi, 1);
  }
  while (i + 8 <= len) {
    const w = load<u64>(p + <usize>i);
    acc += (w & 0xffff) + ((w >> 16) & 0xffff) + ((w >> 32) & 0xffff) + (w >> 48);
    i += 8;
  }
  while (i + 2 <= len) {
    acc += <u64>load<u16>(p + <usize>i);
    i += 2;
  }
  if (i < len) acc += <u64>load<u8>(p + <usize>i); // odd trailing byte is the high half of a BE word: low half of a LE one
  return acc;
}

/** Folds a wide sum to 16 bits, one's complement. */
@inline function fold(acc: u64): u32 {
  acc = (acc & 0xffffffff) + (acc >> 32);
  acc = (acc & 0xffffffff) + (acc >> 32);
  let s = <u32>acc;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return s;
}

/**
 * One's complement sum of len bytes at p, folded to 16 bits, as a big-endian word value, plus
 * `seed` (an earlier partial sum, e.g. a pseudo-header). Not inverted.
 */
export function checksumPartial(p: usize, len: i32, seed: u32): u32 {
  const le = fold(sumWordsLE(p, len, 0));
  const be = <u32>bswap<u16>(<u16>le);
  return fold(<u64>be + <u64>seed);
}

/** The checksum field value for len bytes at p (the field itself zeroed or included: a valid
 *  header yields 0 when its checksum field is included). */
export function checksum(p: usize, len: i32): u32 {
  return ~checksumPartial(p, len, 0) & 0xffff;
}

/**
 * Whether an IPv4 header of ihl bytes (a multiple of 4, 20..60) sums to zero with its checksum
 * field: whole 32-bit words, no SIMD set-up, since every received packet pays for it.
 */
@inline export function ipv4HeaderSumsToZero(p: usize, ihl: i32): bool {
  let acc: u64 = 0;
  for (let i = 0; i < ihl; i += 4) acc += <u64>load<u32>(p + <usize>i);
  return fold(acc) == 0xffff;
}

/**
 * RFC 1624 eqn. 3 incremental update of a checksum field: HC' = ~(~HC + ~m + m'), for one 16-bit
 * word changing from m to m'. Values are big-endian word values.
 */
@inline export function checksumUpdate16(hc: u32, m: u32, m2: u32): u32 {
  let s: u32 = (~hc & 0xffff) + (~m & 0xffff) + m2;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}
