// The virtio_net_hdr (v1 layout, 12 bytes) that a TUN queue opened with IFF_VNET_HDR puts in
// front of every packet: how the kernel tells the reader that a packet is a TSO/USO super-packet
// (gso_type, gso_size) or carries an unfinished checksum (NEEDS_CSUM, csum_start/csum_offset), and
// how a writer hands the kernel a coalesced super-packet. Fields are in the host's byte order
// (little-endian here, as in Wasm), since we never ask for TUNSETVNETBE.

export const VNET_HDR_BYTES: i32 = 12;

export const VNET_FLAGS: i32 = 0; // u8
export const VNET_GSO_TYPE: i32 = 1; // u8
export const VNET_HDR_LEN: i32 = 2; // u16: bytes of IP and transport headers
export const VNET_GSO_SIZE: i32 = 4; // u16: payload bytes per segment
export const VNET_CSUM_START: i32 = 6; // u16: where the checksummed range starts
export const VNET_CSUM_OFFSET: i32 = 8; // u16: where in it the checksum field is

/** The checksum from csum_start on is unfinished: the field holds the pseudo-header sum. */
export const VNET_F_NEEDS_CSUM: u32 = 1;

export const VNET_GSO_NONE: u32 = 0;
export const VNET_GSO_TCPV4: u32 = 1;
export const VNET_GSO_TCPV6: u32 = 4;
export const VNET_GSO_UDP_L4: u32 = 5;
/** Bit on top of the GSO type: the super-packet has CWR set (we never offer TUN_F_TSO_ECN). */
export const VNET_GSO_ECN: u32 = 0x80;

/** Writes an all-zero header (no GSO, checksum complete or to be verified by the kernel) at h. */
@inline export function vnetWriteNone(h: usize): void {
  store<u64>(h, 0);
  store<u32>(h + 8, 0);
}

/**
 * Writes a NEEDS_CSUM header without GSO at h, for a lone packet whose transport checksum from
 * `start` on is known good and whose field at start + offset now holds the pseudo-header sum: the
 * kernel takes it as CHECKSUM_PARTIAL, trusted on local delivery, finished if it ever leaves.
 */
@inline export function vnetWritePartial(h: usize, start: i32, offset: i32, hdrLen: i32): void {
  store<u8>(h + VNET_FLAGS, <u8>VNET_F_NEEDS_CSUM);
  store<u8>(h + VNET_GSO_TYPE, <u8>VNET_GSO_NONE);
  store<u16>(h + VNET_HDR_LEN, <u16>hdrLen);
  store<u16>(h + VNET_GSO_SIZE, 0);
  store<u16>(h + VNET_CSUM_START, <u16>start);
  store<u16>(h + VNET_CSUM_OFFSET, <u16>offset);
  store<u16>(h + 10, 0);
}

/** Writes a TCP GSO header at h for a super-packet with l3 (20: TCPv4, 40: TCPv6) + thl header bytes. */
@inline export function vnetWriteTcp(h: usize, ihl: i32, thl: i32, gsoSize: i32): void {
  store<u8>(h + VNET_FLAGS, <u8>VNET_F_NEEDS_CSUM);
  store<u8>(h + VNET_GSO_TYPE, <u8>(ihl == 40 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4));
  store<u16>(h + VNET_HDR_LEN, <u16>(ihl + thl));
  store<u16>(h + VNET_GSO_SIZE, <u16>gsoSize);
  store<u16>(h + VNET_CSUM_START, <u16>ihl);
  store<u16>(h + VNET_CSUM_OFFSET, 16);
  store<u16>(h + 10, 0);
}

/** Writes a UDP GSO (USO) header at h for a super-packet with l3 (20 or 40) bytes of IP header. */
@inline export function vnetWriteUdp(h: usize, ihl: i32, gsoSize: i32): void {
  store<u8>(h + VNET_FLAGS, <u8>VNET_F_NEEDS_CSUM);
  store<u8>(h + VNET_GSO_TYPE, <u8>VNET_GSO_UDP_L4);
  store<u16>(h + VNET_HDR_LEN, <u16>(ihl + 8));
  store<u16>(h + VNET_GSO_SIZE, <u16>gsoSize);
  store<u16>(h + VNET_CSUM_START, <u16>ihl);
  store<u16>(h + VNET_CSUM_OFFSET, 6);
  store<u16>(h + 10, 0);
}
