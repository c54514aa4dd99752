// The bytes VXLAN (RFC 7348) puts in front of a carried IP packet inside the UDP payload: the
// 8-byte VXLAN header (flags 0x08, 24-bit VNI, reserved bytes zero) and the inner Ethernet header
// (peer VTEP MAC, our VTEP MAC, ethertype). Shared by the send path's lookup phase (resolve.ts)
// and the VXLAN batch functions (vxlan.ts), which is why it is a module of its own.
import { putBe16 } from "./bytes";

export const VXLAN_HEADER: i32 = 8;
export const ETHERNET_HEADER: i32 = 14;
/** What encapsulation writes in front of the IP packet: VXLAN header plus inner Ethernet header. */
export const VXLAN_ENCAP_HEADER_BYTES: i32 = VXLAN_HEADER + ETHERNET_HEADER;
export const ETHERTYPE_IPV4: u32 = 0x0800;
export const ETHERTYPE_IPV6: u32 = 0x86dd;
export const ETHERTYPE_ARP: u32 = 0x0806;
export const VXLAN_FLAG_I: u32 = 0x08;

/** Writes the VXLAN and inner Ethernet headers in the 22 bytes in front of the IP packet at p. */
@inline export function vxlanWriteHeader(p: usize, vni: u32, dstMac: usize, srcMac: usize, ethertype: u32): void {
  const h = p - <usize>VXLAN_ENCAP_HEADER_BYTES;
  store<u32>(h, VXLAN_FLAG_I);
  store<u32>(h + 4, bswap<u32>(vni << 8));
  store<u32>(h + 8, load<u32>(dstMac));
  store<u16>(h + 12, load<u16>(dstMac, 4));
  store<u16>(h + 14, load<u16>(srcMac));
  store<u32>(h + 16, load<u32>(srcMac, 2));
  putBe16(h + 20, ethertype);
}
