// UDP sockets for the dataplane: bound with SO_REUSEPORT so that each worker owns one socket on
// the same address and port; recvmmsg/sendmmsg move a whole batch in one syscall.
// FLAGS bits 0..15 carry a GSO segment size both ways (UDP_SEGMENT on send, UDP_GRO on receive).
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "args.h"
#include "batch.h"
#include "errors.h"
#include "modules.h"
#include "syscall.h"

namespace weft {

namespace {

std::string Endpoint(uint32_t addr, int port) {
  char text[INET_ADDRSTRLEN];
  in_addr in{htonl(addr)};
  inet_ntop(AF_INET, &in, text, sizeof text);
  return std::string(text) + ":" + std::to_string(port);
}

// Root may exceed net.core.[rw]mem_max with the *FORCE options; others get what the limit allows.
void SetBuffer(Napi::Env env, int fd, int forced, int plain, int bytes, const char* name) {
  if (bytes == 0) return;
  if (setsockopt(fd, SOL_SOCKET, forced, &bytes, sizeof bytes) == 0) return;
  if (errno == EPERM && setsockopt(fd, SOL_SOCKET, plain, &bytes, sizeof bytes) == 0) return;
  int err = errno;
  close(fd);
  ThrowSyscallError(env, err, "setsockopt", std::string("setsockopt ") + name, "");
}

std::string BindHint(int err, const std::string& endpoint) {
  switch (err) {
    case EADDRINUSE:
      return "another socket holds " + endpoint +
             ": give every socket that shares it reusePort, or choose another port";
    case EADDRNOTAVAIL:
      return "no interface in this network namespace has that address: add it first, or bind 0.0.0.0";
    case EACCES:
      return "ports below 1024 need CAP_NET_BIND_SERVICE: run as root or use a higher port";
    default:
      return "";
  }
}

// udpOpen(addr, port, reusePort, rcvbuf, sndbuf, gro) -> { fd, port }: port 0 binds an ephemeral
// port, which the result reports. rcvbuf/sndbuf 0 keep the kernel's defaults.
Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto addr = static_cast<uint32_t>(IntArg(info, 0, "addr", 0, UINT32_MAX));
  int port = static_cast<int>(IntArg(info, 1, "port", 0, 65535));
  bool reusePort = BoolArg(info, 2, "reusePort");
  int rcvbuf = static_cast<int>(IntArg(info, 3, "rcvbuf", 0, INT32_MAX / 2));
  int sndbuf = static_cast<int>(IntArg(info, 4, "sndbuf", 0, INT32_MAX / 2));
  bool gro = BoolArg(info, 5, "gro");
  std::string endpoint = Endpoint(addr, port);

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowSyscallError(env, errno, "socket", "socket for " + endpoint, "");
  int on = 1;
  if (reusePort && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "setsockopt", "SO_REUSEPORT on " + endpoint, "");
  }
  if (gro && setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "setsockopt", "UDP_GRO on " + endpoint,
                      err == ENOPROTOOPT ? "UDP_GRO needs Linux 5.0 or later: open without gro" : "");
  }
  SetBuffer(env, fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf, "SO_RCVBUF");
  SetBuffer(env, fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf, "SO_SNDBUF");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "bind", "bind " + endpoint, BindHint(err, endpoint));
  }
  socklen_t len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "getsockname", "getsockname " + endpoint, "");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("port", Napi::Number::New(env, ntohs(sa.sin_port)));
  return result;
}

// Room per packet for one int (UDP_GRO) or u16 (UDP_SEGMENT) control message, and a receive
// timestamp (SO_TIMESTAMPNS).
constexpr size_t kControlBytes = CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(timespec));

struct Messages {
  mmsghdr msgs[kMaxBatch];
  iovec iovs[kMaxBatch];
  sockaddr_in addrs[kMaxBatch];
  alignas(cmsghdr) uint8_t control[kMaxBatch][kControlBytes];
};

// udpSetReuseportProgram(fd, program): attaches a classic BPF program (Int32Array of
// [code, jt, jf, k] per instruction) that picks the socket of fd's SO_REUSEPORT group for each
// datagram: the program sees the UDP payload and returns the socket's index in the group.
Napi::Value UdpSetReuseportProgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Value arg = info[1];
  if (!arg.IsTypedArray() || arg.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowTypeError(env, "program must be an Int32Array of [code, jt, jf, k] instructions");
  }
  Napi::Int32Array words = arg.As<Napi::Int32Array>();
  size_t n = words.ElementLength() / 4;
  if (n == 0 || n > BPF_MAXINSNS || words.ElementLength() % 4 != 0) {
    ThrowRangeError(env, "program must hold 1.." + std::to_string(BPF_MAXINSNS) + " instructions of 4 numbers each");
  }
  std::vector<sock_filter> code(n);
  for (size_t i = 0; i < n; i++) {
    code[i] = sock_filter{static_cast<uint16_t>(words[i * 4]), static_cast<uint8_t>(words[i * 4 + 1]),
                          static_cast<uint8_t>(words[i * 4 + 2]), static_cast<uint32_t>(words[i * 4 + 3])};
  }
  sock_fprog prog{static_cast<unsigned short>(n), code.data()};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0) {
    ThrowSyscallError(env, errno, "setsockopt", "SO_ATTACH_REUSEPORT_CBPF",
                      errno == EINVAL ? "the kernel rejected the program (check it with the BPF verifier rules)" : "");
  }
  return env.Undefined();
}

// udpSetTimestamps(fd): the kernel stamps every datagram with its arrival time (SO_TIMESTAMPNS),
// so that udpRecv can tell how long it waited in the socket's queue.
Napi::Value UdpSetTimestamps(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0) {
    ThrowSyscallError(info.Env(), errno, "setsockopt", "SO_TIMESTAMPNS on fd " + std::to_string(fd), "");
  }
  return info.Env().Undefined();
}

int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Per thread, not on the stack: ~40 KiB, reused by every call on this thread (workers included).
thread_local Messages messages;

// udpRecv(fd, buf, descs, first, count, maxAgeUs?, drop?) -> kept | late << 16. With maxAgeUs > 0
// on a socket with timestamps, `late` counts the datagrams that waited longer than that in the
// socket's queue; with `drop` they are dropped (head drop, as CoDel does once its queue stood above
// target for an interval: the caller decides when, worker.ts) and their descriptors moved behind
// the kept ones, which stay in order at the front. Without `drop` they stay in the batch.
Napi::Value UdpRecv(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  Batch batch(info, 1, Access::kRead, 0);
  const int64_t maxAgeNs = info.Length() > 5 ? IntArg(info, 5, "maxAgeUs", 0, INT32_MAX) * 1000 : 0;
  const bool drop = info.Length() > 6 && BoolArg(info, 6, "drop");
  Messages& m = messages;
  for (uint32_t i = 0; i < batch.count(); i++) {
    m.iovs[i] = {batch[i].data, batch[i].size};
    m.msgs[i].msg_hdr = msghdr{&m.addrs[i], sizeof(sockaddr_in), &m.iovs[i], 1, m.control[i], kControlBytes, 0};
  }
  int n = RetryOnEintr([&] { return recvmmsg(fd, m.msgs, batch.count(), MSG_DONTWAIT, nullptr); });
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), 0);
    ThrowSyscallError(info.Env(), errno, "recvmmsg", "recvmmsg on fd " + std::to_string(fd), "");
  }
  const int64_t now = maxAgeNs > 0 ? RealtimeNs() : 0;
  int kept = 0;
  int late = 0;
  for (int i = 0; i < n; i++) {
    int32_t* desc = batch[i].desc;
    const msghdr& hdr = m.msgs[i].msg_hdr;
    // A datagram larger than CAP arrives cut to CAP bytes (MSG_TRUNC); its inner IP length then
    // disagrees with LEN and the hot path drops it.
    desc[kLen] = static_cast<int32_t>(m.msgs[i].msg_len);
    desc[kAddr] = static_cast<int32_t>(ntohl(m.addrs[i].sin_addr.s_addr));
    desc[kPort] = ntohs(m.addrs[i].sin_port);
    int32_t segment = 0;
    bool stale = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&hdr); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&hdr), c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int size;
        std::memcpy(&size, CMSG_DATA(c), sizeof size);
        segment = size & kFlagsSegmentMask;
      } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS && maxAgeNs > 0) {
        timespec ts;
        std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
        stale = now - (static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec) > maxAgeNs;
        late += stale;
      }
    }
    desc[kFlags] = segment;
    if (stale && drop) continue;
    // Slots are distinct, so swapping whole descriptors keeps every slot owned by one of them.
    if (kept != i) std::swap_ranges(desc, desc + kDescWords, batch[kept].desc);
    kept++;
  }
  return Napi::Number::New(info.Env(), kept | late << 16);
}

Napi::Value UdpSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Batch batch(info, 1, Access::kWrite, 0);
  Messages& m = messages;
  for (uint32_t i = 0; i < batch.count(); i++) {
    const Slot& slot = batch[i];
    if (slot.port < 1 || slot.port > 65535) {
      ThrowRangeError(env, "descriptor " + std::to_string(batch.first() + i) + ": PORT " + std::to_string(slot.port) +
                               " is not a UDP port (1..65535)");
    }
    m.addrs[i] = sockaddr_in{};
    m.addrs[i].sin_family = AF_INET;
    m.addrs[i].sin_port = htons(static_cast<uint16_t>(slot.port));
    m.addrs[i].sin_addr.s_addr = htonl(slot.addr);
    m.iovs[i] = {slot.data, slot.size};
    m.msgs[i].msg_hdr = msghdr{&m.addrs[i], sizeof(sockaddr_in), &m.iovs[i], 1, nullptr, 0, 0};
    uint16_t segment = static_cast<uint16_t>(slot.flags & kFlagsSegmentMask);
    if (segment != 0) {
      msghdr& hdr = m.msgs[i].msg_hdr;
      hdr.msg_control = m.control[i];
      hdr.msg_controllen = CMSG_SPACE(sizeof segment);
      cmsghdr* c = CMSG_FIRSTHDR(&hdr);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof segment);
      std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
    }
  }
  int n = RetryOnEintr([&] { return sendmmsg(fd, m.msgs, batch.count(), MSG_DONTWAIT); });
  if (n < 0) {
    int err = errno;
    if (err == EAGAIN) return Napi::Number::New(env, 0);
    // sendmmsg reports an error only when the first message failed; later failures end the batch
    // and surface on the next call, which starts at the failed packet.
    const Slot& slot = batch[0];
    std::string what = "sendmmsg descriptor " + std::to_string(batch.first()) + " to " + Endpoint(slot.addr, slot.port);
    const char* hint = err == ENETUNREACH || err == EHOSTUNREACH ? "no route to this peer: add one, or drop the packet"
                       : err == EMSGSIZE
                           ? "the datagram exceeds the MTU or 65507 bytes (or GSO limits): split it or drop it"
                       : err == EINVAL ? "bad GSO segment size or destination: drop the packet"
                                       : "";
    ThrowSyscallError(env, err, "sendmmsg", what, hint);
  }
  return Napi::Number::New(env, n);
}

}  // namespace

void RegisterUdp(Napi::Env env, Napi::Object exports) {
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
  exports.Set("udpSetReuseportProgram", Napi::Function::New(env, UdpSetReuseportProgram, "udpSetReuseportProgram"));
  exports.Set("udpRecv", Napi::Function::New(env, UdpRecv, "udpRecv"));
  exports.Set("udpSend", Napi::Function::New(env, UdpSend, "udpSend"));
  exports.Set("udpSetTimestamps", Napi::Function::New(env, UdpSetTimestamps, "udpSetTimestamps"));
}

}  // namespace weft
