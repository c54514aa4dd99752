// The (buf, descs, first, count) arguments of every batch call, checked in full before any
// syscall; a write batch ends before a bad descriptor after its first (the next call throws for it).
// Each descriptor is copied into a Slot first: the descriptor array may live in the same (shared)
// memory that packets are read into, so later reads must not act on unchecked values.
#pragma once

#include <napi.h>

#include <cstdint>

#include "descriptor.h"

namespace weft {

enum class Access {
  kRead,   // fill [OFF, OFF+CAP); CAP must be at least 1
  kWrite,  // send [OFF, OFF+LEN)
};

struct Slot {
  uint8_t* data;  // buf + OFF
  uint32_t size;  // CAP for reads, LEN for writes
  uint32_t addr;  // ADDR as read at validation
  int32_t port;   // PORT as read at validation (unchecked: sockets check their own range)
  int32_t flags;  // FLAGS as read at validation
  int32_t* desc;  // the descriptor, for writing results back
};

// A batch call's result: packets done (kBatchDoneMask) | a call's own flag bits (16; 26..30) |
// failed << kBatchFailedShift, plus errno << kBatchErrnoShift (above the 32 bits, as a double):
// `failed` packets were lost to errors of the kernel's (errno: the first one's), reported rather
// than thrown so that a caller neither loses the count nor pays a call per packet. The only
// definition of the layout: the addon exports it (BATCH_*), and native.ts reads results with it.
constexpr int32_t kBatchDoneMask = 0xffff;
constexpr int32_t kBatchFailedShift = 17;
constexpr int32_t kBatchFailedMask = 0x1ff;
constexpr int32_t kBatchErrnoShift = 32;
static_assert(kMaxBatch <= kBatchDoneMask && kMaxBatch <= kBatchFailedMask, "a batch's counts fit their fields");
static_assert(kBatchDoneMask < 1 << 16 && kBatchFailedShift > 16, "the flag bit 16 lies between done and failed");
static_assert(kBatchFailedShift + 9 <= 31 && kBatchFailedMask < 1 << 9, "failed stays in the low 31 bits");
Napi::Value BatchResult(Napi::Env env, uint32_t done, int32_t flags, uint32_t failed, int err);

class Batch {
 public:
  // Reads info[at .. at+3]. `header` bytes in front of OFF belong to the packet too (the
  // virtio_net_hdr on TUN queues with IFF_VNET_HDR), so OFF must be at least `header`.
  Batch(const Napi::CallbackInfo& info, size_t at, Access access, int32_t header);

  uint32_t first() const { return first_; }
  uint32_t count() const { return count_; }
  // The whole buffer, for ADDR values that are offsets into it (kFlagAddr6).
  uint8_t* base() const { return base_; }
  uint64_t length() const { return length_; }
  const Slot& operator[](uint32_t i) const { return slots_[i]; }

 private:
  uint32_t first_ = 0;
  uint32_t count_ = 0;
  uint8_t* base_ = nullptr;
  uint64_t length_ = 0;
  Slot slots_[kMaxBatch];
};

}  // namespace weft
