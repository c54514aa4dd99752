// Node-style errors: every failing syscall becomes an Error with code ('EPERM'), errno (negative,
// as Node's own), syscall, and a message that says what to do about it.
#pragma once

#include <napi.h>

#include <string>

namespace weft {

// Throws (as a C++ exception that node-addon-api turns into a JS exception). `what` names the
// operation and object ("TUNSETIFF wt0"); `hint` says what to do, "" for a generic hint.
[[noreturn]] void ThrowSyscallError(Napi::Env env, int err, const char* syscall, const std::string& what,
                                    const std::string& hint);

[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& message);
[[noreturn]] void ThrowRangeError(Napi::Env env, const std::string& message);

}  // namespace weft
