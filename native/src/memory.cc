// Transparent huge pages for a region of the hot-path memory (the route tables): their lookups
// are chains of dependent reads spread over megabytes, and on 4 KiB pages nearly each of them
// also misses the TLB. With THP in `madvise` mode (the common default) the kernel backs a range
// with 2 MiB pages only once it is advised, so the dataplane advises its tables before filling
// them. Buffer bookkeeping only: which whole 2 MiB pages of [offset, offset + length) to advise.
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "args.h"
#include "errors.h"
#include "modules.h"
#include "syscall.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older headers lack it
#endif

namespace weft {

namespace {

constexpr uintptr_t kHugePage = 2 << 20;

// memoryAdviseHugePages(buf, offset, length, collapse): advises MADV_HUGEPAGE over the whole 2 MiB
// pages inside [offset, offset + length) of buf (a view over the whole Wasm memory, shared or not),
// then with collapse also MADV_COLLAPSE, which turns pages already faulted in as 4 KiB into huge
// ones now instead of whenever khugepaged gets to them. Returns { offset, bytes } of the advised
// range (bytes 0: no whole huge page inside) and, when the collapse failed (it is best effort:
// EAGAIN, ENOMEM), collapseErrno. A refused MADV_HUGEPAGE (EINVAL: no THP in this kernel) throws.
Napi::Value MemoryAdviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (!info[0].IsTypedArray() ||
      napi_get_typedarray_info(env, info[0], &type, &length, &data, nullptr, nullptr) != napi_ok ||
      type != napi_uint8_array) {
    ThrowTypeError(env, "buf must be a Uint8Array over the memory");
  }
  const int64_t offset = IntArg(info, 1, "offset", 0, static_cast<int64_t>(length));
  const int64_t bytes = IntArg(info, 2, "length", 0, static_cast<int64_t>(length) - offset);
  const bool collapse = BoolArg(info, 3, "collapse");
  const auto base = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (base + offset + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (base + offset + bytes) & ~(kHugePage - 1);
  Napi::Object result = Napi::Object::New(env);
  const uintptr_t advised = end > first ? end - first : 0;
  result.Set("offset", Napi::Number::New(env, static_cast<double>(advised > 0 ? first - base : offset)));
  result.Set("bytes", Napi::Number::New(env, static_cast<double>(advised)));
  // The virtual address, to find the range in /proc/self/smaps (x86-64 and arm64 addresses fit a double).
  result.Set("address", Napi::Number::New(env, static_cast<double>(advised > 0 ? first : base + offset)));
  if (advised == 0) return result;
  void* start = reinterpret_cast<void*>(first);
  if (madvise(start, advised, MADV_HUGEPAGE) < 0) {
    ThrowSyscallError(env, errno, "madvise", "madvise(MADV_HUGEPAGE) on " + std::to_string(advised) + " bytes",
                      "the kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE, "
                      "/sys/kernel/mm/transparent_hugepage/enabled = never?); tables stay on 4 KiB pages");
  }
  if (collapse && madvise(start, advised, MADV_COLLAPSE) < 0) {
    result.Set("collapseErrno", Napi::Number::New(env, -errno));
  }
  return result;
}

}  // namespace

void RegisterMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memoryAdviseHugePages", Napi::Function::New(env, MemoryAdviseHugePages, "memoryAdviseHugePages"));
  SetConstant(env, exports, "HUGE_PAGE_BYTES", static_cast<int32_t>(kHugePage));
}

}  // namespace weft
