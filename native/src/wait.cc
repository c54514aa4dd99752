// Sleeping without spinning: a worker thread blocks in poll() until one of its fds is readable,
// its eventfd waker is signalled, or the timeout passes. Blocking is for worker threads only:
// src/io/wait.ts refuses a blocking wait on the main thread.
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "args.h"
#include "errors.h"
#include "modules.h"
#include "syscall.h"

namespace weft {

namespace {

// Bit i of the result is fds[i]; bits 28-30 are the flags below.
constexpr int kMaxWaitFds = 28;
constexpr int32_t kWoken = 1 << 30;
constexpr int32_t kSpun = 1 << 29;
constexpr int32_t kSlept = 1 << 28;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t NowMs() { return NowNs() / 1000000; }

// Busy polling (the NAPI busy-poll idea): poll() without sleeping until an fd is ready or spinUs
// pass. A sleeping thread costs a wake-up (scheduler, and on a VM an idle vCPU's exit) of tens of
// microseconds per hop; a thread that just forwarded a packet is likely to see the next one (the
// reply) soon. sched_yield() between looks lets other runnable threads of this core (the pod
// answering, the other worker) go first, so spinning never delays the work it waits for.
// Returns poll()'s result: > 0 when something is ready, 0 when the budget ran out; *waited says
// whether it looked more than once (whether spinning, not the first look, found it).
int SpinPoll(pollfd* polls, int n, int64_t spinUs, bool* waited) {
  const int64_t end = NowNs() + spinUs * 1000;
  *waited = false;
  for (;;) {
    int rc = poll(polls, n, 0);
    if (rc != 0 && !(rc < 0 && errno == EINTR)) return rc;
    if (NowNs() >= end) return 0;
    *waited = true;
    sched_yield();
  }
}

// wait(fds, wakeFd, timeoutMs) -> bit i set when fds[i] is readable (or has an error pending, so
// that the next read reports it), WAIT_WOKEN when wakeFd is. 0 = timed out. wakeFd -1 = none,
// timeoutMs -1 = no timeout. spinUs (optional, default 0) polls without sleeping for up to that
// many microseconds first; then WAIT_SPUN says the spin found something after its first look,
// WAIT_SLEPT that its budget ran out and it blocked in poll(), so that the caller can size its
// next budget. The waker is not drained here: a stop request stays visible.
Napi::Value Wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) ThrowTypeError(env, "fds must be an array of file descriptors");
  auto fds = info[0].As<Napi::Array>();
  if (fds.Length() > kMaxWaitFds) ThrowRangeError(env, "wait takes at most " + std::to_string(kMaxWaitFds) + " fds");
  pollfd polls[kMaxWaitFds + 1];
  int count = static_cast<int>(fds.Length());
  for (int i = 0; i < count; i++) {
    int64_t fd = IntValue(env, fds[static_cast<uint32_t>(i)], "fds[" + std::to_string(i) + "]", 0, INT32_MAX);
    polls[i] = {static_cast<int>(fd), POLLIN, 0};
  }
  int wakeFd = static_cast<int>(IntArg(info, 1, "wakeFd", -1, INT32_MAX));
  polls[count] = {wakeFd, POLLIN, 0};  // poll() ignores a negative fd
  int timeoutMs = static_cast<int>(IntArg(info, 2, "timeoutMs", -1, INT32_MAX));
  int64_t spinUs = info.Length() > 3 ? IntArg(info, 3, "spinUs", 0, 1000000) : 0;

  const int64_t deadline = NowMs() + timeoutMs;
  bool waited = false;
  int rc = spinUs > 0 ? SpinPoll(polls, count + 1, spinUs, &waited) : 0;
  int32_t mask = rc > 0 && waited ? kSpun : 0;
  if (rc == 0) {
    if (spinUs > 0) mask = kSlept;
    for (;;) {
      rc = poll(polls, count + 1, timeoutMs);
      if (rc >= 0 || errno != EINTR) break;
      if (timeoutMs > 0) timeoutMs = static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
    }
  }
  if (rc < 0) ThrowSyscallError(env, errno, "poll", "poll", "");
  for (int i = 0; i <= count; i++) {
    if (polls[i].revents & POLLNVAL) {
      ThrowSyscallError(env, EBADF, "poll", "wait on fd " + std::to_string(polls[i].fd),
                        "that fd is not open (closed while another thread waits on it?)");
    }
    if (polls[i].revents & (POLLIN | POLLERR | POLLHUP)) mask |= i < count ? 1 << i : kWoken;
  }
  return Napi::Number::New(env, mask);
}

Napi::Value WakerOpen(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowSyscallError(info.Env(), errno, "eventfd", "eventfd", "");
  return Napi::Number::New(info.Env(), fd);
}

// Any thread may signal; the eventfd counter saturates harmlessly (EAGAIN) when never drained.
Napi::Value WakerSignal(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  uint64_t one = 1;
  ssize_t rc = RetryOnEintr([&] { return write(fd, &one, sizeof one); });
  if (rc < 0 && errno != EAGAIN)
    ThrowSyscallError(info.Env(), errno, "write", "signal waker fd " + std::to_string(fd), "");
  return info.Env().Undefined();
}

// Resets the waker; returns how many signals it had collected (0 when none).
Napi::Value WakerDrain(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  uint64_t count = 0;
  ssize_t rc = RetryOnEintr([&] { return read(fd, &count, sizeof count); });
  if (rc < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), 0);
    ThrowSyscallError(info.Env(), errno, "read", "drain waker fd " + std::to_string(fd), "");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(count));
}

// threadNice(n): the calling thread's nice value (Linux keeps one per thread), -20..19; below the
// current one needs CAP_SYS_NICE.
Napi::Value ThreadNice(const Napi::CallbackInfo& info) {
  int nice = static_cast<int>(IntArg(info, 0, "nice", -20, 19));
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice) < 0) {
    int err = errno;
    ThrowSyscallError(
        info.Env(), err, "setpriority", "set thread nice " + std::to_string(nice),
        err == EACCES || err == EPERM
            ? "raising a thread's priority needs CAP_SYS_NICE: run weft as root, or leave the priority alone"
            : "");
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterWait(Napi::Env env, Napi::Object exports) {
  exports.Set("wait", Napi::Function::New(env, Wait, "wait"));
  exports.Set("wakerOpen", Napi::Function::New(env, WakerOpen, "wakerOpen"));
  exports.Set("wakerSignal", Napi::Function::New(env, WakerSignal, "wakerSignal"));
  exports.Set("wakerDrain", Napi::Function::New(env, WakerDrain, "wakerDrain"));
  exports.Set("threadNice", Napi::Function::New(env, ThreadNice, "threadNice"));
  SetConstant(env, exports, "WAIT_WOKEN", kWoken);
  SetConstant(env, exports, "WAIT_SPUN", kSpun);
  SetConstant(env, exports, "WAIT_SLEPT", kSlept);
  SetConstant(env, exports, "WAIT_MAX_FDS", kMaxWaitFds);
}

}  // namespace weft
