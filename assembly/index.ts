// The weft hot path: every export of this module. Functions take pointers into the imported
// shared memory and keep no state of their own, so each worker thread runs its own instance over
// the same memory. Constants are exported too: the TypeScript side reads layout and codes from
// here instead of repeating them.
export * from "./descriptor";
export * from "./verdict";
export * from "./counters";
export * from "./context";
export { batchInit } from "./batch";
export { checksum, checksumPartial } from "./packet/checksum";
export { vxlanEncapBatch, vxlanDecapBatch } from "./packet/vxlan";
export { VXLAN_ENCAP_HEADER_BYTES } from "./packet/vxlan-header";
export { udpEncapBatch, udpDecapBatch } from "./packet/flannel-udp";
export * from "./route/table";

/** First byte after the module's static data: the TypeScript side lays its regions out from here. */
export function heapBase(): usize {
  return __heap_base;
}
export { vxlanEncapOffloadBatch, udpEncapOffloadBatch, OFFLOAD_MAX_TRAINS } from "./packet/offload-send";
export { vxlanDecapOffloadBatch, udpDecapOffloadBatch, GRO_MAX_SEGMENTS } from "./packet/offload-receive";
export { VNET_HDR_BYTES } from "./packet/vnet-header";
export * from "./route6/table";
