// Reference Internet checksum (RFC 1071), written the plain way: big-endian 16-bit words summed
// with end-around carry.

export function onesSum(bytes: Uint8Array, seed = 0): number {
  let sum = seed;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return sum;
}

/** Checksum field value over bytes (0 when the bytes include a correct checksum field). */
export function internetChecksum(bytes: Uint8Array): number {
  return ~onesSum(bytes) & 0xffff;
}
