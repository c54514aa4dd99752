// The send path: a batch read from a TUN queue, one call per batch. Route lookup (resolve.ts), then
// per packet the encapsulation header goes in front. With a vnet header (`vnet` 1: the queue has
// IFF_VNET_HDR and TSO/USO on) a packet may be a super-packet of up to 64 KB: the checksum the
// kernel left partial is finished in place, or the super-packet is cut into encapsulated segments
// in its output slot (tcp-segment.ts), sent as one or more UDP GSO sends ("trains": at most 64
// datagrams and 65507 bytes each). A packet sent as one datagram carries its flow's tag, so that
// the addon joins it only with the same flow's (DESC_FLOW_TAG_SHIFT). Without one (`vnet` 0,
// offloads off) every packet is the single-segment case: no header to park or act on, nothing to
// segment, and with outDescs == descs the sends stay where they were read, so that case costs
// what a plain encapsulation does.
import {
  DESC_OFF,
  DESC_LEN,
  DESC_FLAGS,
  DESC_FLAG_ADDR6,
  DESC_FLOW_TAG_SHIFT,
  DESC_VERDICT,
  HEADROOM,
  descPtr,
} from "../descriptor";
import { batchSize, descInBounds, finishTx, memoryTop } from "../batch";
import { ctxCountersTx } from "../context";
import { VERDICT_FORWARD, VERDICT_REPLY, DROP_OFFLOAD_HEADER } from "../verdict";
import { ipv4DecrementTtl } from "./ipv4";
import { resolveBatch, resolveApply, resolveForward, resolveReply, ENCAP_VXLAN, ENCAP_NONE } from "./resolve";
import { VXLAN_ENCAP_HEADER_BYTES } from "./vxlan-header";
import { flowHash } from "./flow-hash";
import {
  VNET_HDR_BYTES,
  VNET_FLAGS,
  VNET_GSO_TYPE,
  VNET_GSO_SIZE,
  VNET_CSUM_START,
  VNET_CSUM_OFFSET,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_GSO_UDP_L4,
  VNET_GSO_ECN,
  vnetWriteNone,
} from "./vnet-header";
import {
  completeChecksum,
  gsoTrainBytes,
  segmentSuperPacket,
  OFFLOAD_MAX_SEGMENTS,
  OFFLOAD_MAX_TRAINS,
} from "./tcp-segment";

@inline function copyDesc(to: usize, from: usize): void {
  v128.store(to, v128.load(from));
  v128.store(to, v128.load(from, 16), 16);
}

/** The inner packet's flow tag for FLAGS (DESC_FLOW_TAG_SHIFT): never 0, which means none. */
@inline function flowTag(p: usize, len: i32): i32 {
  const t = <i32>(flowHash(p, len) >>> (32 - 15));
  return (t != 0 ? t : 1) << DESC_FLOW_TAG_SHIFT;
}

/**
 * Acts on one forwarded packet's virtio_net_hdr (parked at the slot's start, `h`): finishes a
 * partial checksum, or segments a super-packet into `out`. Returns a verdict.
 */
@inline function offloadOne(d: usize, h: usize, header: i32, out: usize, cap: i32, counters: usize): i32 {
  const gsoType = <u32>load<u8>(h + VNET_GSO_TYPE) & ~VNET_GSO_ECN;
  if (gsoType == VNET_GSO_TCPV4 || gsoType == VNET_GSO_TCPV6 || gsoType == VNET_GSO_UDP_L4) {
    const gsoSize = <i32>load<u16>(h + VNET_GSO_SIZE);
    const csumStart = <i32>load<u16>(h + VNET_CSUM_START);
    return segmentSuperPacket(d, gsoType, gsoSize, csumStart, header, out, cap, counters);
  }
  if (gsoType != VNET_GSO_NONE) return DROP_OFFLOAD_HEADER;
  if ((<u32>load<u8>(h + VNET_FLAGS) & VNET_F_NEEDS_CSUM) != 0) {
    const v = completeChecksum(
      <usize>load<i32>(d + DESC_OFF),
      load<i32>(d + DESC_LEN),
      <i32>load<u16>(h + VNET_CSUM_START),
      <i32>load<u16>(h + VNET_CSUM_OFFSET),
    );
    if (v != VERDICT_FORWARD) return v;
  }
  const tag = flowTag(<usize>load<i32>(d + DESC_OFF), load<i32>(d + DESC_LEN));
  resolveForward(d, header);
  store<i32>(d + DESC_FLAGS, (load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6) | tag); // one datagram
  return VERDICT_FORWARD;
}

/**
 * Encapsulates the batch of n packets read at `descs` as `format` (ENCAP_VXLAN or ENCAP_NONE,
 * flannel's udp: TTL decremented once, before segmentation). With `vnet` 1 each packet has a vnet
 * header in front and packet i may use output slot out + i * outStride; outDescs must then hold
 * n * OFFLOAD_MAX_TRAINS descriptors. With `vnet` 0 out and outStride are unused and outDescs may
 * be descs itself (no copy). Writes the sends, then the ICMP replies for the TUN device (with a
 * zeroed vnet header in front when `vnet`), to `outDescs`. Returns sends | replies << 16.
 */
export function encapBatch(
  ctx: usize,
  descs: usize,
  n: i32,
  format: i32,
  vnet: i32,
  outDescs: usize,
  out: usize,
  outStride: i32,
): i32 {
  // One specialization per wire format and header, so that neither is tested per packet.
  if (format == ENCAP_VXLAN) {
    return vnet != 0
      ? encapAs(ctx, descs, n, ENCAP_VXLAN, true, outDescs, out, outStride)
      : encapAs(ctx, descs, n, ENCAP_VXLAN, false, outDescs, out, outStride);
  }
  return vnet != 0
    ? encapAs(ctx, descs, n, ENCAP_NONE, true, outDescs, out, outStride)
    : encapAs(ctx, descs, n, ENCAP_NONE, false, outDescs, out, outStride);
}

/** encapBatch for one wire format `encap` and one `vnet` setting (constants once inlined). */
@inline function encapAs(
  ctx: usize,
  descs: usize,
  n: i32,
  encap: i32,
  vnet: bool,
  outDescs: usize,
  out: usize,
  outStride: i32,
): i32 {
  n = batchSize(n);
  const top = memoryTop();
  // resolve writes up to 48 bytes in front of OFF (an ICMPv6 error): park each vnet header at the slot's start.
  for (let i = 0; vnet && i < n; i++) {
    const d = descPtr(descs, i);
    if (!descInBounds(d, top)) continue;
    const p = <usize>load<i32>(d + DESC_OFF);
    memory.copy(p - <usize>HEADROOM, p - <usize>VNET_HDR_BYTES, VNET_HDR_BYTES);
  }
  resolveBatch(ctx, descs, n, encap);
  const header = encap == ENCAP_VXLAN ? VXLAN_ENCAP_HEADER_BYTES : 0;
  const counters = ctxCountersTx(ctx);
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    if (!vnet) {
      // The single segment: the lookup's outcome made final in place, nothing else to act on.
      resolveApply(ctx, d, header);
      if (encap == ENCAP_NONE && load<i32>(d + DESC_VERDICT) == VERDICT_FORWARD) {
        store<i32>(d + DESC_VERDICT, ipv4DecrementTtl(<usize>load<i32>(d + DESC_OFF)));
      }
      continue;
    }
    const v = load<i32>(d + DESC_VERDICT);
    if (v == VERDICT_REPLY) {
      if (resolveReply(ctx, d)) vnetWriteNone(<usize>load<i32>(d + DESC_OFF) - <usize>VNET_HDR_BYTES);
      continue;
    }
    if (v != VERDICT_FORWARD) continue;
    const p = <usize>load<i32>(d + DESC_OFF);
    let w = encap == ENCAP_NONE ? ipv4DecrementTtl(p) : VERDICT_FORWARD;
    if (w == VERDICT_FORWARD)
      w = offloadOne(d, p - <usize>HEADROOM, header, out + <usize>(i * outStride), outStride, counters);
    store<i32>(d + DESC_VERDICT, w);
  }
  const r = finishTx(ctx, descs, n);
  // Without a vnet header nothing was segmented: each send is its packet's descriptor.
  if (!vnet && outDescs == descs) return r;
  const fwd = r & 0xffff;
  const rep = r >>> 16;
  let o = 0;
  for (let i = 0; i < fwd; i++) {
    const d = descPtr(descs, i);
    const stride = vnet ? load<i32>(d + DESC_FLAGS) & 0xffff : 0;
    if (stride == 0) {
      copyDesc(descPtr(outDescs, o++), d);
      continue;
    }
    const train = gsoTrainBytes(stride);
    let at = load<i32>(d + DESC_OFF);
    let rest = load<i32>(d + DESC_LEN);
    while (rest > 0) {
      const t = descPtr(outDescs, o++);
      const bytes = rest < train ? rest : train;
      copyDesc(t, d);
      store<i32>(t + DESC_OFF, at);
      store<i32>(t + DESC_LEN, bytes);
      store<i32>(t + DESC_FLAGS, (bytes > stride ? stride : 0) | (load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6));
      at += bytes;
      rest -= bytes;
    }
  }
  for (let i = fwd; i < fwd + rep; i++) copyDesc(descPtr(outDescs, o + i - fwd), descPtr(descs, i));
  return o | (rep << 16);
}

export { OFFLOAD_MAX_SEGMENTS, OFFLOAD_MAX_TRAINS };
