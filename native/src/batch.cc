#include "batch.h"

#include <climits>
#include <string>

#include "args.h"
#include "errors.h"

namespace weft {

namespace {

struct View {
  void* data;
  size_t length;  // in elements
};

// napi_get_typedarray_info, unlike napi_get_arraybuffer_info, also accepts views over a
// SharedArrayBuffer (shared Wasm memory); its data pointer already includes the view's offset.
View TypedArrayArg(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type want, const char* what) {
  Napi::Value value = info[i];
  napi_typedarray_type type;
  View view{};
  if (!value.IsTypedArray() ||
      napi_get_typedarray_info(info.Env(), value, &type, &view.length, &view.data, nullptr, nullptr) != napi_ok ||
      type != want) {
    ThrowTypeError(info.Env(), what);
  }
  return view;
}

}  // namespace

Batch::Batch(const Napi::CallbackInfo& info, size_t at, Access access, int32_t header) {
  Napi::Env env = info.Env();
  View buf = TypedArrayArg(info, at, napi_uint8_array, "buf must be a Uint8Array (or Buffer)");
  View descs = TypedArrayArg(info, at + 1, napi_int32_array, "descs must be an Int32Array");
  const int64_t first = IntArg(info, at + 2, "first", 0, INT32_MAX);
  first_ = static_cast<uint32_t>(first);
  count_ = static_cast<uint32_t>(IntArg(info, at + 3, "count", 0, kMaxBatch));
  if ((first + count_) * kDescWords > static_cast<int64_t>(descs.length)) {
    ThrowRangeError(env, "descriptors " + std::to_string(first) + ".." + std::to_string(first + count_) +
                             " run past the end of descs (" + std::to_string(descs.length / kDescWords) +
                             " descriptors)");
  }
  auto* base = static_cast<uint8_t*>(buf.data);
  const int64_t end = static_cast<int64_t>(buf.length);
  base_ = base;
  length_ = buf.length;
  const char* sizeName = access == Access::kRead ? "CAP" : "LEN";
  const int64_t minSize = access == Access::kRead ? 1 : 0;
  for (uint32_t i = 0; i < count_; i++) {
    int32_t* desc = static_cast<int32_t*>(descs.data) + (first + i) * kDescWords;
    // OFF and CAP/LEN are unsigned (arena offsets reach 2^32, as Wasm reads them): an OFF above
    // 2 GiB must not sign-extend to a negative offset.
    const int64_t off = static_cast<uint32_t>(desc[kOff]);
    const int64_t size = static_cast<uint32_t>(desc[access == Access::kRead ? kCap : kLen]);
    if (off < header || size < minSize || off + size > end) {
      // A write ends before a bad descriptor after the first, as at a syscall error: the packets
      // ahead of it go, and the next call, starting at it, throws (callers skip a first packet that
      // throws and go on; a throw here would drop the good ones ahead of it with it).
      if (access == Access::kWrite && i > 0) {
        count_ = i;
        break;
      }
      ThrowRangeError(env, "descriptor " + std::to_string(first + i) + " (OFF " + std::to_string(off) + ", " +
                               sizeName + " " + std::to_string(size) + ") is not a slot of this " +
                               std::to_string(end) + "-byte buffer: it needs OFF >= " + std::to_string(header) + ", " +
                               sizeName + " >= " + std::to_string(minSize) + " and OFF + " + sizeName +
                               " <= " + std::to_string(end));
    }
    slots_[i] = Slot{
        base + off, static_cast<uint32_t>(size), static_cast<uint32_t>(desc[kAddr]), desc[kPort], desc[kFlags], desc};
  }
}

Napi::Value BatchResult(Napi::Env env, uint32_t done, int32_t flags, uint32_t failed, int err) {
  const int32_t low = static_cast<int32_t>(done) | flags | static_cast<int32_t>(failed) << kBatchFailedShift;
  return Napi::Number::New(env, static_cast<double>(low) + static_cast<double>(err) * (1ULL << kBatchErrnoShift));
}

}  // namespace weft
