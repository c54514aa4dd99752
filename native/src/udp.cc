// UDP sockets for the dataplane: bound with SO_REUSEPORT so that each worker owns one socket on
// the same address and port; recvmmsg/sendmmsg move a whole batch in one syscall.
// FLAGS bits 0..15 carry a GSO segment size both ways (UDP_SEGMENT on send, UDP_GRO on receive).
// IPv6 sockets (bound to an IPv6 address, or to :: for both families) carry IPv6 peers with
// kFlagAddr6: ADDR is then the buffer offset of the peer's 16-byte address (descriptor.h). IPv4
// peers of an IPv6 socket (::ffff:a.b.c.d) are given and taken as plain IPv4 ADDRs.
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

std::string Endpoint6(const in6_addr& addr, int port) {
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &addr, text, sizeof text);
  return "[" + std::string(text) + "]:" + std::to_string(port);
}

// Room for either family's address (recvmmsg tells which it wrote).
union PeerAddr {
  sockaddr_in v4;
  sockaddr_in6 v6;
};

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
      return "no interface in this network namespace has that address (an IPv6 one may still be in DAD: add it "
             "with nodad): add it first, or bind 0.0.0.0 / ::";
    case EACCES:
      return "ports below 1024 need CAP_NET_BIND_SERVICE: run as root or use a higher port";
    default:
      return "";
  }
}

// udpOpen(addr, port, reusePort, rcvbuf, sndbuf, gro) -> { fd, port }: addr is an IPv4 address as
// a number or an IPv6 address as text ("::" takes both families: V6ONLY is off). port 0 binds an
// ephemeral port, which the result reports. rcvbuf/sndbuf 0 keep the kernel's defaults.
Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool v6 = info[0].IsString();
  in6_addr addr6{};
  uint32_t addr = 0;
  if (v6) {
    std::string text = StringArg(info, 0, "addr");
    if (inet_pton(AF_INET6, text.c_str(), &addr6) != 1) ThrowTypeError(env, "addr \"" + text + "\" is no IPv6 address");
  } else {
    addr = static_cast<uint32_t>(IntArg(info, 0, "addr", 0, UINT32_MAX));
  }
  int port = static_cast<int>(IntArg(info, 1, "port", 0, 65535));
  bool reusePort = BoolArg(info, 2, "reusePort");
  int rcvbuf = static_cast<int>(IntArg(info, 3, "rcvbuf", 0, INT32_MAX / 2));
  int sndbuf = static_cast<int>(IntArg(info, 4, "sndbuf", 0, INT32_MAX / 2));
  bool gro = BoolArg(info, 5, "gro");
  std::string endpoint = v6 ? Endpoint6(addr6, port) : Endpoint(addr, port);

  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowSyscallError(env, errno, "socket", "socket for " + endpoint, "");
  int on = 1;
  int off = 0;
  if (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "setsockopt", "IPV6_V6ONLY off on " + endpoint, "");
  }
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
  PeerAddr sa;
  std::memset(&sa, 0, sizeof sa);
  socklen_t len;
  if (v6) {
    sa.v6.sin6_family = AF_INET6;
    sa.v6.sin6_port = htons(static_cast<uint16_t>(port));
    sa.v6.sin6_addr = addr6;
    len = sizeof sa.v6;
  } else {
    sa.v4.sin_family = AF_INET;
    sa.v4.sin_port = htons(static_cast<uint16_t>(port));
    sa.v4.sin_addr.s_addr = htonl(addr);
    len = sizeof sa.v4;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), len) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "bind", "bind " + endpoint, BindHint(err, endpoint));
  }
  len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) < 0) {
    int err = errno;
    close(fd);
    ThrowSyscallError(env, err, "getsockname", "getsockname " + endpoint, "");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  // sin_port and sin6_port sit at the same offset.
  result.Set("port", Napi::Number::New(env, ntohs(sa.v4.sin_port)));
  return result;
}

// Room per packet for one int (UDP_GRO) or u16 (UDP_SEGMENT) control message, and a receive
// timestamp (SO_TIMESTAMPNS).
constexpr size_t kControlBytes = CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(timespec));

struct Messages {
  mmsghdr msgs[kMaxBatch];
  iovec iovs[kMaxBatch];  // send: taken in order, so a train's iovecs are consecutive
  PeerAddr addrs[kMaxBatch];
  uint32_t firsts[kMaxBatch + 1];  // send: once messages [0, j) went, descriptors [0, firsts[j]) count as sent
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

// udpRecv(fd, buf, descs, first, count, maxAgeUs?, drop?) -> kept | late << 16, plus lateDatagrams
// * 2^32. With maxAgeUs > 0 on a socket with timestamps, `late` counts the messages that waited
// longer than that in the socket's queue, and lateDatagrams the datagrams in them (a UDP_GRO
// message holds up to 64, LEN / segment size rounded up; drop counters count those, while CoDel
// and a full batch go by messages); with `drop` they are dropped (head drop, as CoDel does once its
// queue stood above target for an interval: the caller decides when, worker.ts) and their
// descriptors moved behind the kept ones, which stay in order at the front. Without `drop` they
// stay in the batch.
// An IPv6 sender's address is written to the first 16 bytes of the slot's headroom,
// [OFF - HEADROOM, OFF - HEADROOM + 16), so every OFF must be at least HEADROOM, on every socket:
// which family a sender has is known only after the receive, and asking the socket its family
// would cost a syscall per call (a caller's word for it wrote before the buffer when wrong).
Napi::Value UdpRecv(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0);
  Batch batch(info, 1, Access::kRead, kHeadroom);
  const int64_t maxAgeNs = info.Length() > 5 ? IntArg(info, 5, "maxAgeUs", 0, INT32_MAX) * 1000 : 0;
  const bool drop = info.Length() > 6 && BoolArg(info, 6, "drop");
  Messages& m = messages;
  for (uint32_t i = 0; i < batch.count(); i++) {
    m.iovs[i] = {batch[i].data, batch[i].size};
    m.msgs[i].msg_hdr = msghdr{&m.addrs[i], sizeof(PeerAddr), &m.iovs[i], 1, m.control[i], kControlBytes, 0};
  }
  int n = RetryOnEintr([&] { return recvmmsg(fd, m.msgs, batch.count(), MSG_DONTWAIT, nullptr); });
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), 0);
    ThrowSyscallError(info.Env(), errno, "recvmmsg", "recvmmsg on fd " + std::to_string(fd), "");
  }
  const int64_t now = maxAgeNs > 0 ? RealtimeNs() : 0;
  int kept = 0;
  int late = 0;
  int64_t lateDatagrams = 0;
  for (int i = 0; i < n; i++) {
    int32_t* desc = batch[i].desc;
    const msghdr& hdr = m.msgs[i].msg_hdr;
    // A datagram larger than CAP arrives cut to CAP bytes (MSG_TRUNC); its inner IP length then
    // disagrees with LEN and the hot path drops it.
    desc[kLen] = static_cast<int32_t>(m.msgs[i].msg_len);
    const PeerAddr& from = m.addrs[i];
    int32_t family = 0;
    if (from.v4.sin_family == AF_INET) {
      desc[kAddr] = static_cast<int32_t>(ntohl(from.v4.sin_addr.s_addr));
    } else if (IN6_IS_ADDR_V4MAPPED(&from.v6.sin6_addr)) {
      uint32_t v4;
      std::memcpy(&v4, &from.v6.sin6_addr.s6_addr[12], 4);
      desc[kAddr] = static_cast<int32_t>(ntohl(v4));
    } else {
      // Every OFF was checked to be at least HEADROOM.
      uint8_t* at = batch[i].data - kHeadroom;
      std::memcpy(at, &from.v6.sin6_addr, 16);
      desc[kAddr] = static_cast<int32_t>(at - batch.base());
      family = kFlagAddr6;
    }
    desc[kPort] = ntohs(from.v4.sin_port);
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
    if (stale) lateDatagrams += segment > 0 ? std::max<int64_t>(1, (m.msgs[i].msg_len + segment - 1) / segment) : 1;
    desc[kFlags] = segment | family;
    if (stale && drop) continue;
    // Slots are distinct, so swapping whole descriptors keeps every slot owned by one of them.
    if (kept != i) std::swap_ranges(desc, desc + kDescWords, batch[kept].desc);
    kept++;
  }
  return Napi::Number::New(info.Env(),
                           static_cast<double>(kept | late << 16) + static_cast<double>(lateDatagrams) * 4294967296.0);
}

// Consecutive single datagrams of one flow to one destination go out as one UDP GSO send (a
// "train", as the offload path's segments do): one message of several iovecs, split by the kernel
// at the first datagram's size, so the whole UDP, IP, netfilter and veth/bridge path runs once per
// train instead of once per datagram, and a peer's UDP_GRO socket takes it in one receive. The
// flow is the hot path's tag in FLAGS (kFlowTagShift; untagged datagrams join nothing): the peer's
// reuseport program steers a train by its first datagram, so a train of several flows would take
// all but one off the worker that owns them. The wire is unchanged: the datagrams are exactly
// those of separate sends. Every datagram but the last of a
// train has the first one's size (GSO cuts at that size), and trains stay within the kernel's
// limits (kGsoMaxSegments, kGsoMaxBytes of UDP payload). wireguard-go's bind batches its sends
// the same way.
constexpr uint32_t kGsoMaxSegments = 64;
constexpr uint32_t kGsoMaxBytes = 65507;

// Fills `to` with the slot's destination; returns its length, or 0 with `why` set when the
// descriptor names none.
socklen_t Destination(const Batch& batch, uint32_t i, PeerAddr& to, std::string& why) {
  const Slot& slot = batch[i];
  if (slot.port < 1 || slot.port > 65535) {
    why = "descriptor " + std::to_string(batch.first() + i) + ": PORT " + std::to_string(slot.port) +
          " is not a UDP port (1..65535)";
    return 0;
  }
  std::memset(&to, 0, sizeof to);  // {} would clear only the first member; trains compare whole addresses
  if (slot.flags & kFlagAddr6) {
    if (static_cast<uint64_t>(slot.addr) + 16 > batch.length()) {
      why = "descriptor " + std::to_string(batch.first() + i) + ": ADDR " + std::to_string(slot.addr) +
            " (an IPv6 address's offset) runs past the end of the buffer";
      return 0;
    }
    to.v6.sin6_family = AF_INET6;
    to.v6.sin6_port = htons(static_cast<uint16_t>(slot.port));
    std::memcpy(&to.v6.sin6_addr, batch.base() + slot.addr, 16);
    return sizeof to.v6;
  }
  // An IPv6 socket (V6ONLY off) takes IPv4 destinations as they are.
  to.v4.sin_family = AF_INET;
  to.v4.sin_port = htons(static_cast<uint16_t>(slot.port));
  to.v4.sin_addr.s_addr = htonl(slot.addr);
  return sizeof to.v4;
}

// udpSend's result bit: the kernel refused a UDP GSO send with EIO, and its datagrams went one by
// one; the caller passes gso = false from then on (UDP_SEND_GSO_REFUSED).
constexpr int32_t kSendGsoRefused = 1 << 16;
static_assert((kSendGsoRefused & kBatchDoneMask) == 0 && kSendGsoRefused < 1 << kBatchFailedShift,
              "a flag bit of the batch result");
// udpSend's result bit: the kernel refused a GSO send with EINVAL or EMSGSIZE (a segment larger than
// the path's MTU), and its datagrams went one by one; GSO stays on, so the caller counts it
// (UDP_SEND_GSO_TOO_BIG): every batch to that path pays the refused send again.
constexpr int32_t kSendGsoTooBig = 1 << 26;
static_assert(kSendGsoTooBig > kBatchFailedMask << kBatchFailedShift && kSendGsoTooBig < 1 << 30,
              "a flag bit of the batch result, above `failed`");

// Appends the datagrams of [data, data + size), cut at `segment` bytes (the last may be shorter),
// as messages of one iovec each to `name`, at most `room` of them; returns how many it appended.
uint32_t AppendDatagrams(mmsghdr* msgs, iovec* iovs, uint32_t room, void* name, socklen_t len, uint8_t* data,
                         uint32_t size, uint16_t segment) {
  uint32_t k = 0;
  for (uint32_t at = 0; at < size && k < room; at += segment, k++) {
    iovs[k] = {data + at, std::min<uint32_t>(segment, size - at)};
    msgs[k].msg_hdr = msghdr{name, len, &iovs[k], 1, nullptr, 0, 0};
  }
  return k;
}

// The datagrams of a UDP_SEGMENT message the kernel refused, sent again one message each.
struct Pieces {
  mmsghdr msgs[kMaxBatch];
  iovec iovs[kMaxBatch];
};
thread_local Pieces pieces;

// Sends message `hdr` (with a UDP_SEGMENT control message) as separate datagrams, `count` of them;
// returns how many went (-1 with errno when the first failed). Each iovec is cut at the segment
// size: a train's iovecs are one datagram each, a GSO descriptor's one iovec holds them all.
int SendWithoutGso(int fd, const msghdr& hdr, uint32_t& count) {
  uint16_t segment;
  std::memcpy(&segment, CMSG_DATA(CMSG_FIRSTHDR(const_cast<msghdr*>(&hdr))), sizeof segment);
  count = 0;
  for (size_t v = 0; v < hdr.msg_iovlen; v++) {
    const iovec& iov = hdr.msg_iov[v];
    count += AppendDatagrams(pieces.msgs + count, pieces.iovs + count, kMaxBatch - count, hdr.msg_name, hdr.msg_namelen,
                             static_cast<uint8_t*>(iov.iov_base), iov.iov_len, segment);
  }
  return RetryOnEintr([&] { return sendmmsg(fd, pieces.msgs, count, MSG_DONTWAIT); });
}

void SetSegment(Messages& m, uint32_t j, uint16_t segment) {
  msghdr& hdr = m.msgs[j].msg_hdr;
  hdr.msg_control = m.control[j];
  hdr.msg_controllen = CMSG_SPACE(sizeof segment);
  cmsghdr* c = CMSG_FIRSTHDR(&hdr);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof segment);
  std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
}

// udpSend(fd, buf, descs, first, count, trains = false, gso = true) -> descriptors done |
// kSendGsoRefused when the kernel refused a GSO send (EIO) | kSendGsoTooBig when it refused one as
// too big for the path, as BatchResult: `failed` of the descriptors
// done were lost to messages the kernel refused (a train counts its descriptors). It throws only for its arguments (and
// a bad fd: met after the first message, it ends the batch, and the next call throws). A descriptor with a segment size
// in FLAGS is one GSO send of its own; with `trains`, runs of single datagrams of one flow tag to one destination are
// joined into GSO sends (above). The count returned is of descriptors, whatever the number of messages: a partial send
// ends at a message, so never inside a train. A bad descriptor (slot, PORT, IPv6 address offset) after the first ends
// the batch before it, and the next call, which starts at it, throws for it: a caller that skips a first packet that
// throws then loses only that one. The kernel refuses UDP_SEGMENT with EIO where the route goes through xfrm (IPsec)
// and, before Linux 6.11, where the device has no TX checksum offload (udp_send_skb); wireguard-go turns GSO off then.
// So does this: the refused message's datagrams go again one by one, the result says so, and with `gso` false a
// descriptor with a segment size goes as its datagrams, one message each, and no trains are made. A descriptor cut
// short there by a full socket counts as sent (the rest of it is dropped, as a full socket drops): sending it again
// would repeat datagrams.
Napi::Value UdpSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Batch batch(info, 1, Access::kWrite, 0);
  const bool gso = info.Length() <= 6 || BoolArg(info, 6, "gso");
  const bool trains = gso && info.Length() > 5 && BoolArg(info, 5, "trains");
  Messages& m = messages;
  uint32_t messageCount = 0;
  uint32_t iovCount = 0;
  m.firsts[0] = 0;
  uint32_t trainBytes = 0;  // payload of the open train, 0 when none is open
  int32_t trainTag = 0;     // its flow tag
  for (uint32_t i = 0; i < batch.count(); i++) {
    if (messageCount == kMaxBatch) break;  // only without gso, where descriptors took several messages
    const Slot& slot = batch[i];
    PeerAddr& to = m.addrs[messageCount];
    PeerAddr next;
    std::string why;
    socklen_t len = Destination(batch, i, next, why);
    // A bad destination after the first descriptor ends the batch (Batch does the same for bad
    // slots): the ones ahead of it go, and the next call, starting at it, throws.
    if (len == 0) {
      if (i == 0) ThrowRangeError(env, why);
      break;
    }
    const uint16_t segment = static_cast<uint16_t>(slot.flags & kFlagsSegmentMask);
    const int32_t tag = static_cast<int32_t>(static_cast<uint32_t>(slot.flags) >> kFlowTagShift);
    if (trainBytes != 0 && segment == 0 && tag == trainTag) {
      msghdr& hdr = m.msgs[messageCount - 1].msg_hdr;
      const uint32_t size = static_cast<uint32_t>(hdr.msg_iov[0].iov_len);
      // Joins when the train's last datagram had the train's size (a shorter one ends it).
      if (hdr.msg_iov[hdr.msg_iovlen - 1].iov_len == size && slot.size <= size && slot.size > 0 &&
          hdr.msg_iovlen < kGsoMaxSegments && trainBytes + slot.size <= kGsoMaxBytes && hdr.msg_namelen == len &&
          std::memcmp(hdr.msg_name, &next, len) == 0) {
        m.iovs[iovCount++] = {slot.data, slot.size};
        if (hdr.msg_iovlen++ == 1) SetSegment(m, messageCount - 1, static_cast<uint16_t>(size));
        m.firsts[messageCount] = i + 1;
        trainBytes += slot.size;
        continue;
      }
    }
    to = next;
    if (!gso && segment != 0 && slot.size > segment) {
      // The rest of the batch on the next call; a first descriptor of more datagrams than a batch
      // holds (more than GSO's limit) is cut.
      if (messageCount > 0 && messageCount + (slot.size + segment - 1) / segment > kMaxBatch) break;
      const uint32_t added = AppendDatagrams(m.msgs + messageCount, m.iovs + iovCount, kMaxBatch - messageCount, &to,
                                             len, slot.data, slot.size, segment);
      iovCount += added;
      for (uint32_t k = 0; k < added; k++) m.firsts[++messageCount] = i + 1;
      continue;
    }
    m.iovs[iovCount] = {slot.data, slot.size};
    m.msgs[messageCount].msg_hdr = msghdr{&to, len, &m.iovs[iovCount++], 1, nullptr, 0, 0};
    if (segment != 0 && gso) SetSegment(m, messageCount, segment);
    trainBytes = trains && segment == 0 && tag != 0 && slot.size > 0 ? slot.size : 0;
    trainTag = tag;
    m.firsts[messageCount + 1] = i + 1;
    messageCount++;
  }
  // Messages [0, j) are done: sent, or refused and counted in `failed` (descriptors).
  uint32_t j = 0;
  uint32_t done = 0;
  uint32_t failed = 0;
  int firstErr = 0;
  int32_t flag = 0;
  while (j < messageCount) {
    const msghdr& hdr = m.msgs[j].msg_hdr;
    int err = EIO;
    // Once refused with EIO, the call's other UDP_SEGMENT messages go without trying GSO again.
    if ((flag & kSendGsoRefused) == 0 || hdr.msg_controllen == 0) {
      // After a partial send, the message it stopped at comes first: it fails alone, or the socket
      // is full.
      int n = RetryOnEintr([&] { return sendmmsg(fd, m.msgs + j, messageCount - j, MSG_DONTWAIT); });
      if (n > 0) {
        j += n;
        continue;
      }
      err = errno;
    }
    if (err == EAGAIN) break;
    // A UDP_SEGMENT message the kernel refuses goes again as its datagrams, one message each: with
    // EIO, GSO is refused on this socket for good (the caller stops using it); with EINVAL or
    // EMSGSIZE, a segment is larger than this path's MTU (a PMTU exception, a route's locked mtu),
    // which a separate send fragments. That costs the failed send again on every batch to such a
    // path (one syscall: the addon keeps no state), and drops nothing; the result says so.
    if ((err == EIO || err == EINVAL || err == EMSGSIZE) && hdr.msg_controllen != 0) {
      flag |= err == EIO ? kSendGsoRefused : kSendGsoTooBig;
      uint32_t count;
      const int sent = SendWithoutGso(fd, hdr, count);
      if (sent == static_cast<int>(count)) {
        j++;
        continue;
      }
      if (sent > 0) {
        // Cut short by a full socket. A train's datagrams are its descriptors (the rest go on the
        // next call); a GSO descriptor counts once any of it went.
        done = hdr.msg_iovlen > 1 ? m.firsts[j] + sent : m.firsts[j + 1];
        break;
      }
      err = errno;
      if (err == EAGAIN) break;
    }
    // A closed or replaced fd (another thread's close between two sendmmsg calls) loses nothing, as
    // at a TUN write: the messages done so far are reported, and the next call, which starts at
    // this one, throws.
    if (err == EBADF || err == ENOTSOCK) {
      if (j > 0) break;
      ThrowSyscallError(env, err, "sendmmsg", "sendmmsg on fd " + std::to_string(fd), "");
    }
    // The kernel refused the message (no route, a netfilter drop, a broadcast without
    // SO_BROADCAST): its descriptors are lost and counted, and the rest of the batch goes on, so
    // that a train or batch to a refused peer costs one call, not one per datagram.
    failed += m.firsts[j + 1] - m.firsts[j];
    if (firstErr == 0) firstErr = err;
    j++;
  }
  if (done == 0) done = m.firsts[j];
  return BatchResult(env, done, flag, failed, firstErr);
}

}  // namespace

void RegisterUdp(Napi::Env env, Napi::Object exports) {
  SetConstant(env, exports, "UDP_SEND_GSO_REFUSED", kSendGsoRefused);
  SetConstant(env, exports, "UDP_SEND_GSO_TOO_BIG", kSendGsoTooBig);
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen, "udpOpen"));
  exports.Set("udpSetReuseportProgram", Napi::Function::New(env, UdpSetReuseportProgram, "udpSetReuseportProgram"));
  exports.Set("udpRecv", Napi::Function::New(env, UdpRecv, "udpRecv"));
  exports.Set("udpSend", Napi::Function::New(env, UdpSend, "udpSend"));
  exports.Set("udpSetTimestamps", Napi::Function::New(env, UdpSetTimestamps, "udpSetTimestamps"));
}

}  // namespace weft
