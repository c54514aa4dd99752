// Argument checks shared by every call: wrong types throw TypeError, values out of range RangeError.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace weft {

// An integral Number in [min, max]; `name` appears in the error message.
int64_t IntValue(Napi::Env env, Napi::Value value, const std::string& name, int64_t min, int64_t max);
int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max);

// A file descriptor: an integer in [0, INT32_MAX].
int FdArg(const Napi::CallbackInfo& info, size_t i);

bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* name);

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name);

}  // namespace weft
