// The batch descriptor, mirrored from assembly/descriptor.ts (the source of truth). Offsets here are
// in i32 words; the addon exports them as byte offsets like descriptor.ts, and
// test/io/descriptor.test.ts checks both against the Wasm module's exports.
#pragma once

#include <cstdint>

namespace weft {

constexpr int32_t kDescBytes = 32;
constexpr int32_t kDescWords = kDescBytes / 4;
constexpr int32_t kOff = 0;
constexpr int32_t kCap = 1;
constexpr int32_t kLen = 2;
constexpr int32_t kAddr = 3;
constexpr int32_t kPort = 4;
constexpr int32_t kFlags = 5;
constexpr int32_t kVerdict = 6;
constexpr int32_t kAux = 7;
constexpr int32_t kHeadroom = 64;
constexpr int32_t kMaxBatch = 256;

// FLAGS bits 0..15 on UDP descriptors: the GSO segment size (send: split into datagrams of this
// size with UDP_SEGMENT; receive: the size the kernel coalesced with UDP_GRO). 0 = one datagram.
constexpr int32_t kFlagsSegmentMask = 0xffff;
// FLAGS bit on UDP descriptors: ADDR is not an IPv4 address but the buffer offset of a 16-byte
// IPv6 address (DESC_FLAG_ADDR6): read from there on send, written to the slot's headroom on receive.
constexpr int32_t kFlagAddr6 = 0x10000;
// FLAGS bits 17..31 of a single datagram to send: its inner flow's tag, 0 = none
// (DESC_FLOW_TAG_SHIFT). Only datagrams with one tag are joined into a GSO train.
constexpr int32_t kFlowTagShift = 17;

// The virtio_net_hdr (v1 layout, 12 bytes) that rides in front of OFF on TUN queues opened with
// IFF_VNET_HDR; it fits well inside the headroom.
constexpr int32_t kVnetHdrBytes = 12;

}  // namespace weft
