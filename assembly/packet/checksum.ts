// The Internet checksum (RFC 1071): one's complement sum of big-endian 16-bit words.
// The sum is byte-order independent up to a final byte swap (RFC 1071 §2(B)), so the loops add
// little-endian words and swap once at the end. Sixteen bytes at a time with SIMD for the body.

/**
 * Adds len bytes at p to a running 32-bit sum of little-endian 16-bit words (not folded). With
 * `to` (not 0) it also copies the bytes there as it reads them: segmentation copies every payload
 * whose checksum it needs, and one pass over it costs less than a copy and then a sum.
 */
@inline function sumWordsLE(p: usize, len: i32, acc: u64, to: usize = 0): u64 {
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
        const a = v128.load(q);
        const b = v128.load(q, 16);
        const c = v128.load(q, 32);
        const e = v128.load(q, 48);
        if (to != 0) {
          const t = to + <usize>i;
          v128.store(t, a);
          v128.store(t, b, 16);
          v128.store(t, c, 32);
          v128.store(t, e, 48);
        }
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(a));
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(b));
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(c));
        v = i32x4.add(v, i32x4.extadd_pairwise_i16x8_u(e));
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
    if (to != 0) store<u64>(to + <usize>i, w);
    acc += (w & 0xffff) + ((w >> 16) & 0xffff) + ((w >> 32) & 0xffff) + (w >> 48);
    i += 8;
  }
  while (i + 2 <= len) {
    const w = load<u16>(p + <usize>i);
    if (to != 0) store<u16>(to + <usize>i, w);
    acc += <u64>w;
    i += 2;
  }
  if (i < len) {
    // odd trailing byte is the high half of a BE word: low half of a LE one
    const b = load<u8>(p + <usize>i);
    if (to != 0) store<u8>(to + <usize>i, b);
    acc += <u64>b;
  }
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
  return foldSeeded(sumWordsLE(p, len, 0), seed);
}

/**
 * Copies len bytes from `from` to `to` (regions apart) and returns checksumPartial of them: the
 * sum of a payload moved into a segment, in the same pass as the move.
 */
export function copyChecksumPartial(to: usize, from: usize, len: i32, seed: u32): u32 {
  return foldSeeded(sumWordsLE(from, len, 0, to), seed);
}

/** A little-endian word sum as checksumPartial returns it: folded, big-endian, seed added. */
@inline function foldSeeded(acc: u64, seed: u32): u32 {
  const be = <u32>bswap<u16>(<u16>fold(acc));
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
