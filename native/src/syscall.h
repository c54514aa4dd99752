// Small helpers shared by the syscall wrappers.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>

namespace weft {

// Runs a syscall again while a signal interrupts it; returns its last result (errno set as it left it).
template <typename Call>
auto RetryOnEintr(Call call) {
  decltype(call()) rc;
  do {
    rc = call();
  } while (rc < 0 && errno == EINTR);
  return rc;
}

inline void SetConstant(Napi::Env env, Napi::Object exports, const char* name, int32_t value) {
  exports.Set(name, Napi::Number::New(env, value));
}

}  // namespace weft
