// flannel's "udp" backend wire format: the bare IPv4 packet is the UDP payload (port 8285).
// Like flannel's proxy, both directions decrement the TTL (the proxy is a router hop) with an
// incremental checksum update, and a packet with no route gets an ICMP net-unreachable back.
import { DESC_OFF, DESC_LEN, DESC_VERDICT, descPtr } from "../descriptor";
import { batchSize, descInBounds, finishRx, memoryTop } from "../batch";
import { sourceCheckBatch } from "./source-check";
import { VERDICT_FORWARD, DROP_BAD_DESCRIPTOR } from "../verdict";
import { ipv4Check, ipv4DecrementTtl, ipv4TotalLen } from "./ipv4";

@inline function receiveOne(d: usize, top: i64): i32 {
  if (!descInBounds(d, top)) return DROP_BAD_DESCRIPTOR;
  const p = <usize>load<i32>(d + DESC_OFF);
  const v = ipv4Check(p, load<i32>(d + DESC_LEN), true);
  if (v != VERDICT_FORWARD) return v;
  store<i32>(d + DESC_LEN, ipv4TotalLen(p));
  return VERDICT_FORWARD;
}

/**
 * Validates a batch received on the udp backend's socket (any bytes at all yield a verdict),
 * checks sources (source-check.ts) and decrements TTLs. Returns the number to write to the TUN device, moved to the front.
 */
export function udpDecapBatch(ctx: usize, descs: usize, n: i32): i32 {
  n = batchSize(n);
  const top = memoryTop();
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    store<i32>(d + DESC_VERDICT, receiveOne(d, top));
  }
  sourceCheckBatch(ctx, descs, n);
  // The TTL changes the packet, so it comes after the (repeatable) source check.
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    if (load<i32>(d + DESC_VERDICT) == VERDICT_FORWARD) {
      store<i32>(d + DESC_VERDICT, ipv4DecrementTtl(<usize>load<i32>(d + DESC_OFF)));
    }
  }
  return finishRx(ctx, descs, n);
}
