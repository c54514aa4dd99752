// Entering a network namespace on the calling thread only (setns affects one thread), so that a
// TUN device or socket created next belongs to that namespace. Used by tests and benchmarks to
// keep every device out of the root namespace; src/io/netns.ts restores the thread in `finally`.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace weft {

namespace {

constexpr const char* kHint =
    "entering a network namespace needs CAP_SYS_ADMIN; check that the namespace exists (ip netns list)";

// Returns a descriptor of the thread's current namespace, to hand back to NetnsRestore.
Napi::Value NetnsEnter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "path");
  int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) ThrowSyscallError(env, errno, "open", "open /proc/thread-self/ns/net", "is /proc mounted?");
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(original);
    ThrowSyscallError(env, err, "open", "open " + path, kHint);
  }
  int rc = setns(target, CLONE_NEWNET);
  int err = errno;
  close(target);
  if (rc < 0) {
    close(original);
    ThrowSyscallError(env, err, "setns", "setns " + path, kHint);
  }
  return Napi::Number::New(env, original);
}

Napi::Value NetnsRestore(const Napi::CallbackInfo& info) {
  int original = FdArg(info, 0);
  int rc = setns(original, CLONE_NEWNET);
  int err = errno;
  close(original);
  if (rc < 0) {
    ThrowSyscallError(info.Env(), err, "setns", "return to the original network namespace",
                      "the thread is stuck in another namespace: stop the process");
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("netnsEnter", Napi::Function::New(env, NetnsEnter, "netnsEnter"));
  exports.Set("netnsRestore", Napi::Function::New(env, NetnsRestore, "netnsRestore"));
}

}  // namespace weft
