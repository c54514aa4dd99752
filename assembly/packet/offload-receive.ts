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
import { countAdd, COUNTER_OFFLOAD_SEGMENTS } from "../counters";
import { ctxCountersRx } from "../context";
import { DROP_OFFLOAD_SIZE } from "../verdict";
import { ENCAP_VXLAN } from "./resolve";
import { vxlanDecapBatch } from "./vxlan";
import { udpDecapBatch } from "./flannel-udp";
import { VNET_HDR_BYTES, vnetWriteNone, vnetWriteTcp } from "./vnet-header";
import {
  tcpMergeablePayload,
  tcpFollows,
  tcpChecksumValid,
  tcpFinishMerged,
  tcpIpHeaderLen,
  tcpFlags,
  tcpHeaderLen,
  tcpSeq,
  TCP_PSH,
  IPV4_MAX_TOTAL,
} from "./tcp-coalesce";

/** Most datagrams the kernel puts in one UDP GRO receive (UDP_GRO_CNT_MAX). */
export const GRO_MAX_SEGMENTS: i32 = 64;

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
    let seg = load<i32>(d + DESC_FLAGS) & 0xffff;
    if (seg == 0 || seg > len - at) seg = len - at;
    store<i32>(s + DESC_OFF, off + at);
    store<i32>(s + DESC_LEN, seg);
    store<i32>(s + DESC_CAP, off + at);
    store<i32>(s + DESC_FLAGS, (at == 0 ? HEADROOM : 0) | (load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6));
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
 * Gives the lone packet of scratch descriptor s a zeroed vnet header: in place when its datagram
 * leaves room in front, else copied to the output region at `used`. Returns the new `used`, or
 * -1 when the region is full (the packet is then dropped).
 */
@inline function placeSingle(s: usize, out: usize, used: i32, cap: i32): i32 {
  const p = <usize>load<i32>(s + DESC_OFF);
  const len = load<i32>(s + DESC_LEN);
  const room = load<i32>(s + DESC_OFF) - load<i32>(s + DESC_CAP) + (load<i32>(s + DESC_FLAGS) & 0xffff);
  if (room >= VNET_HDR_BYTES) {
    vnetWriteNone(p - <usize>VNET_HDR_BYTES);
    return used;
  }
  const need = align8(VNET_HDR_BYTES + len);
  if (used + need > cap) return -1;
  const q = out + <usize>used;
  vnetWriteNone(q);
  memory.copy(q + <usize>VNET_HDR_BYTES, p, len);
  store<i32>(s + DESC_OFF, <i32>(q + <usize>VNET_HDR_BYTES));
  return used + need;
}

/**
 * Coalesces the fwd decapsulated packets of a scratch batch (in order) into the output
 * descriptors from `produced` on, building super-packets in the output region from `used` on.
 * Returns produced | used << 32.
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
): i64 {
  const counters = ctxCountersRx(ctx);
  let head: usize = 0; // scratch descriptor of the open super-packet's first segment (0: none)
  let headPkt: usize = 0;
  let headLen = 0;
  let merged: usize = 0; // where the super-packet is built (0 while it is one segment)
  let mergedLen = 0;
  let segSize = 0;
  let segs = 0;
  let nextSeq: u32 = 0;
  let open = false; // may take more segments
  for (let k = 0; k <= fwd; k++) {
    let s: usize = 0;
    let p: usize = 0;
    let len = 0;
    let pay = -1;
    if (k < fwd) {
      s = descPtr(scratch, k);
      p = <usize>load<i32>(s + DESC_OFF);
      len = load<i32>(s + DESC_LEN);
      pay = tcpMergeablePayload(p, len);
    }
    if (head != 0) {
      if (
        pay > 0 &&
        open &&
        pay <= segSize &&
        (merged != 0 ? mergedLen : headLen) + pay <= IPV4_MAX_TOTAL &&
        tcpFollows(headPkt, p, nextSeq)
      ) {
        if (merged == 0 && used + VNET_HDR_BYTES + IPV4_MAX_TOTAL <= cap && tcpChecksumValid(headPkt, headLen)) {
          merged = out + <usize>(used + VNET_HDR_BYTES);
          memory.copy(merged, headPkt, headLen);
          mergedLen = headLen;
        }
        if (merged != 0 && tcpChecksumValid(p, len)) {
          memory.copy(merged + <usize>mergedLen, p + <usize>(len - pay), pay);
          mergedLen += pay;
          segs++;
          nextSeq += <u32>pay;
          if ((tcpFlags(p) & TCP_PSH) != 0) {
            const f = merged + <usize>tcpIpHeaderLen(merged) + 13;
            store<u8>(f, load<u8>(f) | <u8>TCP_PSH);
            open = false;
          }
          if (pay < segSize) open = false;
          continue;
        }
      }
      // The open super-packet ends here.
      if (merged != 0) {
        tcpFinishMerged(merged, mergedLen);
        vnetWriteTcp(merged - <usize>VNET_HDR_BYTES, tcpIpHeaderLen(merged), tcpHeaderLen(merged), segSize);
        store<i32>(head + DESC_OFF, <i32>merged);
        store<i32>(head + DESC_LEN, mergedLen);
        used += align8(VNET_HDR_BYTES + mergedLen);
        countAdd(counters, COUNTER_OFFLOAD_SEGMENTS, <u64>segs);
        produced = emit(outDescs, produced, outMax, head, counters);
      } else {
        const u = placeSingle(head, out, used, cap);
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
    if (pay > 0) {
      head = s;
      headPkt = p;
      headLen = len;
      segSize = pay;
      segs = 1;
      nextSeq = tcpSeq(p) + <u32>pay;
      open = (tcpFlags(p) & TCP_PSH) == 0;
      continue;
    }
    const u = placeSingle(s, out, used, cap);
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
    const c = coalesceChunk(ctx, scratch, fwd, outDescs, produced, outMax, out, used, cap);
    produced = <i32>c;
    used = <i32>(c >> 32);
  }
  return produced;
}
