// The receive path: a batch from a socket, one call per batch. With offloads (`vnet` 1: the socket
// has UDP_GRO and the TUN queue IFF_VNET_HDR) one descriptor may hold many datagrams back to back
// (FLAGS = their size, the last one shorter): they are laid out as descriptors of their own (in
// place, no copy), validated and source-checked by the usual decapsulation (vxlan.ts,
// flannel-udp.ts, 256 at a time), and then consecutive TCP segments of one flow are merged into a
// super-packet in the output region (tcp-coalesce.ts), written with a TCPv4 or TCPv6 GSO vnet header so
// the kernel takes them in one write. Everything else goes to the TUN device one by one, with a
// zeroed vnet header written in front of it in place when there is room (the VXLAN header always
// leaves 22 bytes) or after a copy into the output region when there is not (flannel udp
// datagrams after the first of a GRO batch, whose bytes in front belong to the one before).
// Without offloads (`vnet` 0) every receive is the single-segment case: one datagram, nothing to
// split or merge and no header to write, so the decapsulation runs on the batch in place.
//
// Checksum trust. The kernel's UDP GRO merges only datagrams with a non-zero UDP checksum, and
// only after validating it (udp4/udp6_gro_receive, udp_gro_receive_segment); a receive whose
// segment size leaves room for more than one datagram is such a merge (or a GSO train that never
// left the host, whose partial checksum the kernel trusts as well). The bytes of each of its
// segments are therefore the sender's bytes, inner checksums included: we merge them without our
// own pass over them, and hand lone TCP and UDP packets of such receives to the TUN device with
// NEEDS_CSUM so that the pod's kernel skips its pass too. Single datagrams (zero-checksum ones from
// kernel vxlan peers among them) keep the full check before a merge, and go alone with a zeroed
// header, so that the pod's kernel checks them (and counts a bad one, TcpInCsumErrors).
import {
  DESC_OFF,
  DESC_CAP,
  DESC_LEN,
  DESC_FLAGS,
  DESC_FLAG_ADDR6,
  DESC_VERDICT,
  DESC_AUX,
  HEADROOM,
  MAX_BATCH,
  descPtr,
} from "../descriptor";
import { batchSize, descInBounds, memoryTop } from "../batch";
import { countAdd, COUNTER_CSUM_TRUSTED, COUNTER_OFFLOAD_SEGMENTS } from "../counters";
import { CTX_FLAG_USO, ctxCountersRx, ctxHasFlag } from "../context";
import { DROP_OFFLOAD_SIZE } from "../verdict";
import { ENCAP_VXLAN } from "./resolve";
import { vxlanDecapBatch } from "./vxlan";
import { udpDecapBatch } from "./flannel-udp";
import { VNET_HDR_BYTES, vnetWriteNone, vnetWritePartial, vnetWriteTcp, vnetWriteUdp } from "./vnet-header";
import { be16, putBe16 } from "./bytes";
import { IPV6_HEADER } from "./ipv6";
import { PROTO_TCP, PROTO_UDP, TCP_HEADER_MIN, ipv4PseudoSum } from "./tcp-segment";
import { checksumPartial } from "./checksum";
import {
  tcpMergeablePayload,
  tcpFollows,
  l4ChecksumValid,
  tcpFinishMerged,
  ipHeaderLen,
  tcpFlags,
  tcpHeaderLen,
  tcpSeq,
  TCP_PSH,
  IPV4_MAX_TOTAL,
} from "./tcp-coalesce";
import { udpMergeablePayload, udpFollows, udpFinishMerged } from "./udp-coalesce";

/** Most datagrams the kernel puts in one UDP GRO receive (UDP_GRO_CNT_MAX). */
export const GRO_MAX_SEGMENTS: i32 = 64;

/**
 * Scratch descriptors only, in FLAGS beside the headroom and DESC_FLAG_ADDR6: the datagram came in
 * a receive of more than one datagram, so the kernel verified its outer UDP checksum.
 */
const SEG_OUTER_VERIFIED: i32 = 0x20000;

@inline function outerVerified(s: usize): bool {
  return (load<i32>(s + DESC_FLAGS) & SEG_OUTER_VERIFIED) != 0;
}

@inline function copyDesc(to: usize, from: usize): void {
  v128.store(to, v128.load(from));
  v128.store(to, v128.load(from, 16), 16);
}

@inline function align8(n: i32): i32 {
  return (n + 7) & ~7;
}

/**
 * Lays the datagrams of received descriptors [i, n) out as scratch descriptors, at most
 * MAX_BATCH, starting `at` bytes into descriptor i. Each keeps the sender (ADDR, PORT), its
 * datagram's start in CAP and the free bytes in front of that start in FLAGS bits 0..15 (the
 * slot's headroom for the first datagram, none for the others) beside DESC_FLAG_ADDR6, since the
 * source check still needs the sender. Returns m | i << 16 | at << 32 to go on from.
 */
function splitDatagrams(descs: usize, i: i32, n: i32, at: i32, scratch: usize, top: i64): i64 {
  let m = 0;
  while (i < n && m < MAX_BATCH) {
    const d = descPtr(descs, i);
    const s = descPtr(scratch, m++);
    copyDesc(s, d);
    if (!descInBounds(d, top)) {
      // decapsulation drops it as a bad descriptor
      i++;
      at = 0;
      continue;
    }
    const off = load<i32>(d + DESC_OFF);
    const len = load<i32>(d + DESC_LEN);
    const gro = load<i32>(d + DESC_FLAGS) & 0xffff;
    let seg = gro;
    if (seg == 0 || seg > len - at) seg = len - at;
    store<i32>(s + DESC_OFF, off + at);
    store<i32>(s + DESC_LEN, seg);
    store<i32>(s + DESC_CAP, off + at);
    store<i32>(
      s + DESC_FLAGS,
      (at == 0 ? HEADROOM : 0) |
        (load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6) |
        (gro != 0 && gro < len ? SEG_OUTER_VERIFIED : 0),
    );
    store<i32>(s + DESC_VERDICT, 0);
    store<i32>(s + DESC_AUX, -1);
    at += seg;
    if (at >= len) {
      i++;
      at = 0;
    }
  }
  return <i64>m | ((<i64>i) << 16) | ((<i64>at) << 32);
}

/** Appends scratch descriptor s to the output descriptors (or counts a drop when they are full). */
@inline function emit(outDescs: usize, produced: i32, outMax: i32, s: usize, counters: usize): i32 {
  if (produced >= outMax) {
    countAdd(counters, DROP_OFFLOAD_SIZE, 1);
    return produced;
  }
  const o = descPtr(outDescs, produced);
  copyDesc(o, s);
  return produced + 1;
}

/**
 * Where the transport checksum of the IP packet at p (len bytes, checked by decapsulation) starts,
 * and the field's offset in it << 16, when it is TCP or UDP with a checksum (and a UDP length of
 * the whole IP payload), right after the IPv4 header (not a fragment) or the IPv6 fixed header; -1
 * otherwise. The field then gets the pseudo-header sum, as NEEDS_CSUM wants it.
 */
function makePartial(p: usize, len: i32): i32 {
  let l3: i32;
  let proto: u32;
  if (load<u8>(p) >> 4 == 6) {
    l3 = IPV6_HEADER;
    proto = <u32>load<u8>(p + 6);
  } else {
    l3 = (<i32>load<u8>(p) & 15) << 2;
    if ((be16(p + 6) & 0x3fff) != 0) return -1; // a fragment: its transport header is not all here
    proto = <u32>load<u8>(p + 9);
  }
  const l4len = len - l3;
  // UDP with a zero checksum has none to skip. Nor does UDP whose length is not the IP payload's:
  // a forwarding kernel finishes NEEDS_CSUM over the bytes to the packet's end, padding included,
  // so a padded datagram goes unmarked for the kernel to verify (one longer, to drop).
  const l4 = p + <usize>l3;
  let field: i32;
  if (proto == PROTO_TCP && l4len >= TCP_HEADER_MIN) field = 16;
  else if (proto == PROTO_UDP && l4len >= 8 && be16(l4 + 6) != 0 && <i32>be16(l4 + 4) == l4len) field = 6;
  else return -1;
  const sum = l3 == IPV6_HEADER ? checksumPartial(p + 8, 32, proto + <u32>l4len) : ipv4PseudoSum(p, proto, l4len);
  putBe16(p + <usize>(l3 + field), sum);
  return l3 | (field << 16);
}

/**
 * Gives the lone packet of scratch descriptor s its vnet header: NEEDS_CSUM when its outer
 * checksum was verified and it is TCP or UDP (makePartial), else zeroed, so that the kernel
 * checks it. In place when its datagram leaves room in front, else copied to the output region at
 * `used`. Returns the new `used`, or -1 when the region is full (the packet is then dropped).
 */
@inline function placeSingle(s: usize, out: usize, used: i32, cap: i32, counters: usize): i32 {
  let p = <usize>load<i32>(s + DESC_OFF);
  const len = load<i32>(s + DESC_LEN);
  const room = load<i32>(s + DESC_OFF) - load<i32>(s + DESC_CAP) + (load<i32>(s + DESC_FLAGS) & 0xffff);
  if (room < VNET_HDR_BYTES) {
    const need = align8(VNET_HDR_BYTES + len);
    if (used + need > cap) return -1;
    const q = out + <usize>(used + VNET_HDR_BYTES);
    memory.copy(q, p, len);
    p = q;
    store<i32>(s + DESC_OFF, <i32>q);
    used += need;
  }
  const h = p - <usize>VNET_HDR_BYTES;
  const partial = outerVerified(s) ? makePartial(p, len) : -1;
  if (partial < 0) {
    vnetWriteNone(h);
  } else {
    const start = partial & 0xffff;
    const field = partial >> 16;
    vnetWritePartial(h, start, field, start + (field == 16 ? TCP_HEADER_MIN : 8));
    countAdd(counters, COUNTER_CSUM_TRUSTED, 1);
  }
  return used;
}

/**
 * Coalesces the fwd decapsulated packets of a scratch batch (in order) into the output
 * descriptors from `produced` on, building super-packets in the output region from `used` on:
 * TCP segments always (tcp-coalesce.ts), UDP datagrams when the TUN device takes USO
 * (`uso`, udp-coalesce.ts). Returns produced | used << 32.
 */
function coalesceChunk(
  ctx: usize,
  scratch: usize,
  fwd: i32,
  outDescs: usize,
  produced: i32,
  outMax: i32,
  out: usize,
  used: i32,
  cap: i32,
  uso: bool,
): i64 {
  const counters = ctxCountersRx(ctx);
  let head: usize = 0; // scratch descriptor of the open super-packet's first segment (0: none)
  let headPkt: usize = 0;
  let headLen = 0;
  let proto: u32 = 0; // the open super-packet's: PROTO_TCP or PROTO_UDP
  let merged: usize = 0; // where the super-packet is built (0 while it is one segment)
  let mergedLen = 0;
  let segSize = 0;
  let segs = 0;
  let nextSeq: u32 = 0;
  let open = false; // may take more segments
  let trusted = 0; // segments merged without our check (SEG_OUTER_VERIFIED)
  for (let k = 0; k <= fwd; k++) {
    let s: usize = 0;
    let p: usize = 0;
    let len = 0;
    let pay = -1;
    let kind: u32 = 0;
    if (k < fwd) {
      s = descPtr(scratch, k);
      p = <usize>load<i32>(s + DESC_OFF);
      len = load<i32>(s + DESC_LEN);
      pay = tcpMergeablePayload(p, len);
      if (pay > 0) kind = PROTO_TCP;
      else if (uso) {
        pay = udpMergeablePayload(p, len);
        if (pay > 0) kind = PROTO_UDP;
      }
    }
    if (head != 0) {
      if (
        kind == proto &&
        open &&
        pay <= segSize &&
        (merged != 0 ? mergedLen : headLen) + pay <= IPV4_MAX_TOTAL &&
        (kind == PROTO_TCP
          ? tcpFollows(headPkt, p, nextSeq, segs)
          : segs < GRO_MAX_SEGMENTS && udpFollows(headPkt, p, segs))
      ) {
        if (
          merged == 0 &&
          used + VNET_HDR_BYTES + IPV4_MAX_TOTAL <= cap &&
          (outerVerified(head) || l4ChecksumValid(headPkt, headLen, proto))
        ) {
          merged = out + <usize>(used + VNET_HDR_BYTES);
          memory.copy(merged, headPkt, headLen);
          mergedLen = headLen;
          if (outerVerified(head)) trusted++;
        }
        if (merged != 0 && (outerVerified(s) || l4ChecksumValid(p, len, proto))) {
          if (outerVerified(s)) trusted++;
          memory.copy(merged + <usize>mergedLen, p + <usize>(len - pay), pay);
          mergedLen += pay;
          segs++;
          nextSeq += <u32>pay;
          if (kind == PROTO_TCP && (tcpFlags(p) & TCP_PSH) != 0) {
            const f = merged + <usize>ipHeaderLen(merged) + 13;
            store<u8>(f, load<u8>(f) | <u8>TCP_PSH);
            open = false;
          }
          if (pay < segSize) open = false;
          continue;
        }
      }
      // The open super-packet ends here.
      if (merged != 0) {
        const h = merged - <usize>VNET_HDR_BYTES;
        if (proto == PROTO_TCP) {
          tcpFinishMerged(merged, mergedLen);
          vnetWriteTcp(h, ipHeaderLen(merged), tcpHeaderLen(merged), segSize);
        } else {
          udpFinishMerged(merged, mergedLen);
          vnetWriteUdp(h, ipHeaderLen(merged), segSize);
        }
        store<i32>(head + DESC_OFF, <i32>merged);
        store<i32>(head + DESC_LEN, mergedLen);
        used += align8(VNET_HDR_BYTES + mergedLen);
        countAdd(counters, COUNTER_OFFLOAD_SEGMENTS, <u64>segs);
        countAdd(counters, COUNTER_CSUM_TRUSTED, <u64>trusted);
        trusted = 0;
        produced = emit(outDescs, produced, outMax, head, counters);
      } else {
        const u = placeSingle(head, out, used, cap, counters);
        if (u < 0) countAdd(counters, DROP_OFFLOAD_SIZE, 1);
        else {
          used = u;
          produced = emit(outDescs, produced, outMax, head, counters);
        }
      }
      head = 0;
      merged = 0;
    }
    if (k == fwd) break;
    if (kind != 0) {
      head = s;
      headPkt = p;
      headLen = len;
      proto = kind;
      segSize = pay;
      segs = 1;
      if (kind == PROTO_TCP) {
        nextSeq = tcpSeq(p) + <u32>pay;
        open = (tcpFlags(p) & TCP_PSH) == 0;
      } else open = true;
      continue;
    }
    const u = placeSingle(s, out, used, cap, counters);
    if (u < 0) countAdd(counters, DROP_OFFLOAD_SIZE, 1);
    else {
      used = u;
      produced = emit(outDescs, produced, outMax, s, counters);
    }
  }
  return <i64>produced | ((<i64>used) << 32);
}

/**
 * Decapsulates n received descriptors (GRO batches or single datagrams) of wire format `format`
 * (ENCAP_VXLAN or ENCAP_NONE) into `outDescs` (room for outMax), ready for TUN writes. With `vnet`
 * 1 they are coalesced, with a vnet header in front of every packet; `scratch` holds MAX_BATCH
 * descriptors, `out` is `cap` bytes for packets that must move. With `vnet` 0 scratch, out and cap
 * are unused and outDescs may be descs itself (no copy). Verdicts are counted per datagram.
 * Returns the number of packets for the TUN device.
 */
export function decapBatch(
  ctx: usize,
  descs: usize,
  n: i32,
  format: i32,
  vnet: i32,
  scratch: usize,
  outDescs: usize,
  outMax: i32,
  out: usize,
  cap: i32,
): i32 {
  n = batchSize(n);
  if (vnet == 0) {
    let fwd = format == ENCAP_VXLAN ? vxlanDecapBatch(ctx, descs, n) : udpDecapBatch(ctx, descs, n);
    if (outDescs == descs) return fwd;
    if (fwd > outMax) {
      countAdd(ctxCountersRx(ctx), DROP_OFFLOAD_SIZE, <u64>(fwd - outMax));
      fwd = outMax;
    }
    for (let i = 0; i < fwd; i++) copyDesc(descPtr(outDescs, i), descPtr(descs, i));
    return fwd;
  }
  const top = memoryTop();
  const uso = ctxHasFlag(ctx, CTX_FLAG_USO);
  let produced = 0;
  let used = 0;
  let i = 0;
  let at = 0;
  while (i < n) {
    const r = splitDatagrams(descs, i, n, at, scratch, top);
    const m = <i32>(r & 0xffff);
    i = <i32>((r >> 16) & 0xffff);
    at = <i32>(r >> 32);
    const fwd = format == ENCAP_VXLAN ? vxlanDecapBatch(ctx, scratch, m) : udpDecapBatch(ctx, scratch, m);
    const c = coalesceChunk(ctx, scratch, fwd, outDescs, produced, outMax, out, used, cap, uso);
    produced = <i32>c;
    used = <i32>(c >> 32);
  }
  return produced;
}
