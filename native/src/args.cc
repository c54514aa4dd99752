#include "args.h"

#include <climits>
#include <cmath>

#include "errors.h"

namespace weft {

int64_t IntValue(Napi::Env env, Napi::Value value, const std::string& name, int64_t min, int64_t max) {
  if (!value.IsNumber()) ThrowTypeError(env, name + " must be a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::trunc(number) != number) ThrowTypeError(env, name + " must be an integer");
  if (number < static_cast<double>(min) || number > static_cast<double>(max)) {
    ThrowRangeError(env, name + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                             std::to_string(static_cast<int64_t>(number)));
  }
  return static_cast<int64_t>(number);
}

int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  return IntValue(info.Env(), info[i], name, min, max);
}

int FdArg(const Napi::CallbackInfo& info, size_t i) { return static_cast<int>(IntArg(info, i, "fd", 0, INT32_MAX)); }

bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBoolean()) ThrowTypeError(info.Env(), std::string(name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) ThrowTypeError(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

}  // namespace weft
