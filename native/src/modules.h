// Each source file registers its own functions and constants on the addon's exports.
#pragma once

#include <napi.h>

namespace weft {

void RegisterDescriptor(Napi::Env env, Napi::Object exports);
void RegisterFd(Napi::Env env, Napi::Object exports);
void RegisterMemory(Napi::Env env, Napi::Object exports);
void RegisterNetns(Napi::Env env, Napi::Object exports);
void RegisterTun(Napi::Env env, Napi::Object exports);
void RegisterUdp(Napi::Env env, Napi::Object exports);
void RegisterWait(Napi::Env env, Napi::Object exports);

}  // namespace weft
