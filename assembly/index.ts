// The weft hot path: every export of this module. Functions take pointers into the imported
// shared memory and keep no state of their own, so each worker thread runs its own instance over
// the same memory. Constants are exported too: the TypeScript side reads layout and codes from
// here instead of repeating them.
export * from "./descriptor";
export * from "./verdict";
export * from "./counters";
export * from "./context";
export { batchInit } from "./batch";
export {
  icmpBucketInit,
  ICMP_BUCKET_NOW,
  ICMP_BUCKET_BYTES,
  ICMP_ERRORS_PER_SEC,
  ICMP_ERRORS_BURST,
} from "./packet/icmp-rate";
export { checksum, checksumPartial } from "./packet/checksum";
export { VXLAN_ENCAP_HEADER_BYTES } from "./packet/vxlan-header";
// The packet path: one call per batch and direction, for both wire formats (ENCAP_VXLAN, ENCAP_NONE
// = flannel's udp), with or without offloads (vnet 0 is the single-segment case of the same call).
export { ENCAP_VXLAN, ENCAP_NONE } from "./packet/resolve";
export { encapBatch, OFFLOAD_MAX_SEGMENTS, OFFLOAD_MAX_TRAINS } from "./packet/offload-send";
export { decapBatch, GRO_MAX_SEGMENTS } from "./packet/offload-receive";
export {
  fqSize,
  fqInit,
  fqCut,
  fqReset,
  fqTakeOver,
  FQ_PREPARED,
  FQ_OUT,
  FQ_SENDS,
  FQ_WRITES,
  fqBacklog,
  fqSparseWaiting,
  fqFlowBucket,
  fqPrepare,
  fqEnqueue,
  fqDequeue,
  FQ_BUCKETS,
} from "./packet/flow-queue";
export * from "./route/table";

/** First byte after the module's static data: the TypeScript side lays its regions out from here. */
export function heapBase(): usize {
  return __heap_base;
}
export { VNET_HDR_BYTES } from "./packet/vnet-header";
export * from "./route6/table";
