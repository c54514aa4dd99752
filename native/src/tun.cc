// TUN queues: IFF_TUN | IFF_NO_PI, optionally IFF_MULTI_QUEUE (one fd per queue, one queue per
// worker) and IFF_VNET_HDR (a 12-byte virtio_net_hdr in the slot bytes just before OFF).
// There is no batched read for TUN in the kernel: a batch is one syscall per packet, but one
// N-API crossing per batch.
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "args.h"
#include "batch.h"
#include "errors.h"
#include "modules.h"
#include "syscall.h"

// Newer than the headers on some build machines (Linux 6.2).
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

namespace weft {

namespace {

std::string SetIffHint(int err, const std::string& name) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "creating or attaching TUN device " + name + " needs CAP_NET_ADMIN: run weft as root";
    case EBUSY:
      return "device " + name +
             " is held by another process, or every queue is taken: close the other owner or pick another name";
    case EINVAL:
      return "device " + name + " exists with other flags (multi-queue or not, TUN or TAP): delete it (ip link del " +
             name + ") or open it with the same options";
    default:
      return "";
  }
}

// Returns { fd, name }: the kernel picks the name when `name` holds a %d pattern.
Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "name");
  bool multiQueue = BoolArg(info, 1, "multiQueue");
  bool vnetHdr = BoolArg(info, 2, "vnetHdr");
  if (name.empty() || name.size() >= IFNAMSIZ) {
    ThrowRangeError(env, "a device name has 1 to " + std::to_string(IFNAMSIZ - 1) + " bytes, got \"" + name + "\"");
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    ThrowSyscallError(env, err, "open", "open /dev/net/tun",
                      err == ENOENT ? "the TUN driver is missing: load it (modprobe tun) or create /dev/net/tun" : "");
  }
  struct ifreq ifr {};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multiQueue ? IFF_MULTI_QUEUE : 0) | (vnetHdr ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "ioctl", "TUNSETIFF " + name, SetIffHint(err, name));
  }
  int hdrSize = kVnetHdrBytes;
  if (vnetHdr && ioctl(fd, TUNSETVNETHDRSZ, &hdrSize) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "ioctl", "TUNSETVNETHDRSZ " + name, "");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("name", Napi::String::New(env, ifr.ifr_name));
  return result;
}

Napi::Value TunSetOffload(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  auto flags = static_cast<unsigned long>(IntArg(info, 1, "flags", 0, 0xff));
  if (ioctl(fd, TUNSETOFFLOAD, flags) < 0) {
    int err = errno;
    ThrowSyscallError(info.Env(), err, "ioctl", "TUNSETOFFLOAD " + std::to_string(flags),
                      err == EINVAL ? "the kernel refuses these offloads (USO4 and USO6 only together and from Linux "
                                      "6.2 on, TSO only with CSUM): leave them out"
                                    : "");
  }
  return info.Env().Undefined();
}

// tunSetSteeringProgram(fd, program): loads `program` (a Uint8Array of 8-byte eBPF instructions, a
// socket filter) and makes it the device's queue selector (TUNSETSTEERINGEBPF): the device then
// sends each packet to queue (return value % queues) instead of following its flow table. The
// device keeps its own reference to the program, so our fd is closed at once.
Napi::Value TunSetSteeringProgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Value arg = info[1];
  if (!arg.IsTypedArray() || arg.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowTypeError(env, "program must be a Uint8Array of 8-byte eBPF instructions");
  }
  Napi::Uint8Array bytes = arg.As<Napi::Uint8Array>();
  size_t n = bytes.ByteLength() / sizeof(bpf_insn);
  if (n == 0 || n > BPF_MAXINSNS || bytes.ByteLength() % sizeof(bpf_insn) != 0) {
    ThrowRangeError(env, "program must hold 1.." + std::to_string(BPF_MAXINSNS) + " instructions of 8 bytes each");
  }
  std::vector<bpf_insn> insns(n);
  memcpy(insns.data(), bytes.Data(), n * sizeof(bpf_insn));
  // The verifier's log only when it refuses: a retry with a buffer says why.
  std::vector<char> log;
  int prog = -1;
  int firstErr = 0;
  for (int attempt = 0; attempt < 2 && prog < 0; attempt++) {
    bpf_attr attr{};
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = reinterpret_cast<uint64_t>(insns.data());
    attr.insn_cnt = static_cast<uint32_t>(n);
    attr.license = reinterpret_cast<uint64_t>("GPL");
    if (attempt == 1) {
      log.assign(4096, '\0');
      attr.log_buf = reinterpret_cast<uint64_t>(log.data());
      attr.log_size = static_cast<uint32_t>(log.size());
      attr.log_level = 1;
    }
    prog = static_cast<int>(RetryOnEintr([&] { return syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr); }));
    if (prog < 0 && attempt == 0) firstErr = errno;
    if (prog < 0 && errno != EINVAL && errno != EACCES) break;
  }
  if (prog < 0) {
    // The first attempt's errno: the retry's may be ENOSPC, a log longer than our buffer.
    int err = firstErr;
    std::string hint;
    if (err == EPERM) hint = "loading a BPF program needs CAP_BPF (Linux 5.8 on) or CAP_SYS_ADMIN: run weft as root";
    if (err == ENOSYS) hint = "this kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)";
    if (!log.empty() && log[0] != '\0') hint = "the verifier refused it: " + std::string(log.data());
    ThrowSyscallError(env, err, "bpf", "BPF_PROG_LOAD (TUN steering)", hint);
  }
  int rc = ioctl(fd, TUNSETSTEERINGEBPF, &prog);
  int err = errno;
  close(prog);
  if (rc < 0) {
    ThrowSyscallError(
        env, err, "ioctl", "TUNSETSTEERINGEBPF",
        err == EINVAL || err == ENOTTY ? "this kernel's TUN driver has no steering programs (Linux 4.16 on)" : "");
  }
  return env.Undefined();
}

int32_t HeaderArg(const Napi::CallbackInfo& info, size_t i) {
  int32_t header = static_cast<int32_t>(IntArg(info, i, "header", 0, kVnetHdrBytes));
  if (header != 0 && header != kVnetHdrBytes) {
    ThrowRangeError(info.Env(), "header must be 0 or " + std::to_string(kVnetHdrBytes));
  }
  return header;
}

// One packet per read/readv or write/writev; EINTR is retried.
ssize_t Transfer(int fd, const Slot& slot, int32_t header, bool write) {
  iovec iov[2] = {{slot.data - header, static_cast<size_t>(header)}, {slot.data, slot.size}};
  const iovec* first = header > 0 ? iov : iov + 1;
  int n = header > 0 ? 2 : 1;
  return RetryOnEintr([&] { return write ? writev(fd, first, n) : readv(fd, first, n); });
}

// Shared by read and write, as BatchResult: stops at EAGAIN. A write the kernel refuses (a packet
// that is not IPv4/IPv6, a bad virtio_net_hdr) is done and counted in `failed`, and the batch goes
// on, as udpSend's refused messages do: no call or throw per refused packet. A read's other error
// ends the batch, and is thrown when it hit the first packet; the packet is gone (tun_do_read frees
// the one it could not copy), so the result counts it as failed, after the `done` read. A closed
// fd or deleted device (EBADF, EBADFD) loses nothing: it ends the batch, and throws on the next call.
Napi::Value RunBatch(const Napi::CallbackInfo& info, bool write) {
  int fd = FdArg(info, 0);
  int32_t header = HeaderArg(info, 5);
  Batch batch(info, 1, write ? Access::kWrite : Access::kRead, header);
  uint32_t done = 0;
  uint32_t failed = 0;
  int firstErr = 0;
  for (; done < batch.count(); done++) {
    const Slot& slot = batch[done];
    ssize_t n = Transfer(fd, slot, header, write);
    if (n < 0) {
      int err = errno;
      if (err == EAGAIN) break;
      const bool gone = err == EBADF || err == EBADFD;
      if (write && !gone) {
        failed++;
        if (firstErr == 0) firstErr = err;
        continue;
      }
      if (done > 0) return BatchResult(info.Env(), done, 0, gone ? failed : 1, gone ? firstErr : err);
      ThrowSyscallError(info.Env(), err, write ? "writev" : "readv",
                        std::string(write ? "TUN write" : "TUN read") + " of descriptor " +
                            std::to_string(batch.first()) + " on fd " + std::to_string(fd),
                        err == EBADFD ? "the queue is detached or its device deleted: reopen it" : "");
    }
    // A packet longer than CAP arrives cut to CAP bytes (the kernel returns what it copied); its IP
    // length then disagrees with LEN and the hot path drops it.
    if (!write) slot.desc[kLen] = static_cast<int32_t>(n - header);
  }
  return BatchResult(info.Env(), done, 0, failed, firstErr);
}

Napi::Value TunRead(const Napi::CallbackInfo& info) { return RunBatch(info, false); }

Napi::Value TunWrite(const Napi::CallbackInfo& info) { return RunBatch(info, true); }

}  // namespace

void RegisterTun(Napi::Env env, Napi::Object exports) {
  exports.Set("tunOpen", Napi::Function::New(env, TunOpen, "tunOpen"));
  exports.Set("tunSetOffload", Napi::Function::New(env, TunSetOffload, "tunSetOffload"));
  exports.Set("tunSetSteeringProgram", Napi::Function::New(env, TunSetSteeringProgram, "tunSetSteeringProgram"));
  exports.Set("tunRead", Napi::Function::New(env, TunRead, "tunRead"));
  exports.Set("tunWrite", Napi::Function::New(env, TunWrite, "tunWrite"));
  SetConstant(env, exports, "TUN_F_CSUM", TUN_F_CSUM);
  SetConstant(env, exports, "TUN_F_TSO4", TUN_F_TSO4);
  SetConstant(env, exports, "TUN_F_TSO6", TUN_F_TSO6);
  SetConstant(env, exports, "TUN_F_USO4", TUN_F_USO4);
  SetConstant(env, exports, "TUN_F_USO6", TUN_F_USO6);
}

}  // namespace weft
