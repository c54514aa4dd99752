// Closing descriptors. Handles in src/io make a second close() a no-op, so EBADF here is a bug.
#include <unistd.h>

#include <cerrno>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace weft {

namespace {

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  // On Linux the descriptor is gone even when close() reports EINTR: never retry it.
  if (close(fd) < 0 && errno != EINTR) {
    ThrowSyscallError(info.Env(), errno, "close", "close fd " + std::to_string(fd), "");
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterFd(Napi::Env env, Napi::Object exports) {
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

}  // namespace weft
