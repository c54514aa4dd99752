// weft's native I/O: syscalls and buffer bookkeeping only. Packet logic lives in assembly/.
#include <napi.h>

#include "batch.h"
#include "descriptor.h"
#include "modules.h"
#include "syscall.h"

namespace weft {

// Raised with every change the JS side must match (a layout, a result's encoding, a function's
// arguments): src/io/native.ts refuses an addon of another version, which `npm run build` leaves.
constexpr int32_t kAbiVersion = 3;

void RegisterDescriptor(Napi::Env env, Napi::Object exports) {
  auto set = [&](const char* name, int32_t value) { SetConstant(env, exports, name, value); };
  // Byte offsets, as in assembly/descriptor.ts.
  set("ABI_VERSION", kAbiVersion);
  set("DESC_BYTES", kDescBytes);
  set("DESC_OFF", kOff * 4);
  set("DESC_CAP", kCap * 4);
  set("DESC_LEN", kLen * 4);
  set("DESC_ADDR", kAddr * 4);
  set("DESC_PORT", kPort * 4);
  set("DESC_FLAGS", kFlags * 4);
  set("DESC_VERDICT", kVerdict * 4);
  set("DESC_AUX", kAux * 4);
  set("HEADROOM", kHeadroom);
  set("MAX_BATCH", kMaxBatch);
  set("BATCH_DONE_MASK", kBatchDoneMask);
  set("BATCH_FAILED_SHIFT", kBatchFailedShift);
  set("BATCH_FAILED_MASK", kBatchFailedMask);
  set("BATCH_ERRNO_SHIFT", kBatchErrnoShift);
  set("FLAGS_SEGMENT_MASK", kFlagsSegmentMask);
  set("DESC_FLAG_ADDR6", kFlagAddr6);
  set("DESC_FLOW_TAG_SHIFT", kFlowTagShift);
  set("VNET_HDR_BYTES", kVnetHdrBytes);
}

}  // namespace weft

// NODE_API_MODULE wants an unqualified name.
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  weft::RegisterDescriptor(env, exports);
  weft::RegisterFd(env, exports);
  weft::RegisterMemory(env, exports);
  weft::RegisterNetns(env, exports);
  weft::RegisterTun(env, exports);
  weft::RegisterUdp(env, exports);
  weft::RegisterWait(env, exports);
  return exports;
}

NODE_API_MODULE(weft_io, Init)
