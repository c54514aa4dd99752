#include "errors.h"

#include <uv.h>

#include <cerrno>
#include <cstring>

namespace weft {

namespace {

// Hints for errors whose cure does not depend on the operation.
const char* GenericHint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "this needs CAP_NET_ADMIN: run weft as root or grant it that capability";
    case EMFILE:
    case ENFILE:
      return "too many open files: raise the limit (ulimit -n) or close unused handles";
    case EBADF:
      return "the handle is closed or not of this kind: open a new one";
    case ENOMEM:
    case ENOBUFS:
      return "the kernel is short of memory: retry later or shrink socket buffers";
    default:
      return "see the errno and syscall on this error";
  }
}

}  // namespace

void ThrowSyscallError(Napi::Env env, int err, const char* syscall, const std::string& what, const std::string& hint) {
  char name[64];
  uv_err_name_r(-err, name, sizeof name);
  // libuv has no name for EBADFD (a TUN queue whose device was deleted), which callers match on.
  const std::string code = err == EBADFD ? "EBADFD" : name;
  std::string message =
      what + ": " + std::strerror(err) + " (" + code + "); " + (hint.empty() ? GenericHint(err) : hint.c_str());
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  throw error;
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  throw error;
}

void ThrowRangeError(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw error;
}

}  // namespace weft
