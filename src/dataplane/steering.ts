// Spreading flows over the queue pairs (and so the workers), the same way in both directions. All
// datagrams from one peer share one outer 4-tuple (weft sends from its bound port), so
// SO_REUSEPORT's own hash would hand every flow from that peer to one socket. Instead a classic BPF
// program on the reuseport group hashes the *inner* flow — addresses and ports of the carried IPv4
// or IPv6 packet (the dataplane's family) — and picks the socket from it. The same hash, as an
// eBPF program on the TUN device (TUNSETSTEERINGEBPF), picks the queue of every packet the host
// sends into the overlay, so pair q's socket and TUN queue see both directions of the same flows.
// The hash is symmetric (a reply hashes as its request) and ours, not the TUN device's boot-seeded
// one, whose flow table follows the queue a flow was last written on and lets a one-way flow move
// to another pair once the entry ages out (3 s).
import type { WireFormat } from "./queue-task.js";

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS = 0x20;
const LD_H_ABS = 0x28;
const LD_B_ABS = 0x30;
const JMP_JA = 0x05;
const JMP_JEQ_K = 0x15;
const TAX = 0x07;
const ALU_XOR_X = 0xac;
const ALU_RSH_K = 0x74;
const ALU_MUL_K = 0x24;
const ALU_MOD_K = 0x94;
const ALU_AND_K = 0x54;
const RET_A = 0x16;

/** Where the inner IP header starts in the UDP payload. */
const INNER_IP: Record<WireFormat, number> = { vxlan: 8 + 14, udp: 0 };

/**
 * Per family: the address words, the protocol byte, ICMP's protocol number and where the transport
 * header starts (IPv4 options and IPv6 extension headers are rare enough to hash as ports).
 */
const LAYOUT = {
  4: { words: [12, 16], protocol: 9, icmp: 1, l4: 20 },
  6: { words: [8, 12, 16, 20, 24, 28, 32, 36], protocol: 6, icmp: 58, l4: 40 },
} as const;

/** A classic BPF instruction: [code, jt, jf, k]. */
type Insn = [number, number, number, number];

/**
 * The flow hash of the IP packet at offset `ip` mod `n`: the XOR of the inner source and
 * destination address words and of the two 16-bit halves of the 4 bytes after the fixed header
 * (TCP/UDP ports), so that swapping source and destination changes nothing, then a multiplicative
 * (Fibonacci) hash. For ICMP those 4 bytes are type, code and checksum, which differ between a
 * request and its reply and from one echo to the next: the echo identifier (bytes 4–5) stands in
 * for the ports, so that every echo of one ping lands on one pair (a checksum-hashed echo woke the
 * host's other worker on about half the round trips). A packet too short for the loads makes the
 * program return 0 (the first pair), which is fine for garbage.
 */
function flowHashProgram(ip: number, n: number, family: 4 | 6): Int32Array {
  const { words, protocol, icmp, l4 } = LAYOUT[family];
  const insns: Insn[] = [
    [LD_B_ABS, 0, 0, ip + protocol], // A = protocol (next header)
    [JMP_JEQ_K, 0, 2, icmp],
    [LD_H_ABS, 0, 0, ip + l4 + 4], // ICMP: A = echo identifier
    [JMP_JA, 0, 0, 4],
    [LD_W_ABS, 0, 0, ip + l4], // otherwise: A = source and destination ports,
    [TAX, 0, 0, 0],
    [ALU_RSH_K, 0, 0, 16],
    [ALU_XOR_X, 0, 0, 0], // folded into one another,
    [ALU_AND_K, 0, 0, 0xffff], // without the high half, which still holds one port alone
    // Every address word XORed into A through X.
    ...words.flatMap((w): Insn[] => [
      [TAX, 0, 0, 0], // X = A
      [LD_W_ABS, 0, 0, ip + w],
      [ALU_XOR_X, 0, 0, 0], // A ^= X
    ]),
    [TAX, 0, 0, 0],
    [ALU_RSH_K, 0, 0, 16], // fold the high half in, so that ports and addresses all count
    [ALU_XOR_X, 0, 0, 0],
    // Multiply and keep high bits: the low bits alone are no hash (Linux gives connect() even
    // ports only, so every flow from one client would land on the same worker).
    [ALU_MUL_K, 0, 0, 0x9e3779b1 | 0],
    [ALU_RSH_K, 0, 0, 16],
    [ALU_MOD_K, 0, 0, n],
    [RET_A, 0, 0, 0],
  ];
  return Int32Array.from(insns.flat());
}

/** The reuseport program for `sockets` sockets: the socket index of each datagram's inner flow. */
export function innerFlowSteering(format: WireFormat, sockets: number, family: 4 | 6 = 4): Int32Array {
  return flowHashProgram(INNER_IP[format], sockets, family);
}

/**
 * The TUN device's program for `queues` queues: the same hash over the packet the host sends (its
 * IP header at offset 0), as eBPF, so that a flow's packets leave on the queue of the socket its
 * replies arrive on (the dataplane opens queue q and socket q for pair q, in order).
 */
export function tunFlowSteering(queues: number, family: 4 | 6 = 4): Uint8Array {
  return toExtendedBpf(flowHashProgram(0, queues, family));
}

// eBPF encoding (linux/bpf.h): code, dst and src registers, 16-bit offset, 32-bit immediate.
const EBPF_MOV64_X = 0xbf;
const EBPF_MOV32_K = 0xb4;
const EBPF_MOV32_X = 0xbc;
// 64-bit compares (JMP32 needs Linux 5.1, TUN steering only 4.16): R0 holds a zero-extended 32-bit
// value and the constants compared are small and positive, so they compare as classic BPF does.
const EBPF_JEQ_K = 0x15;
const EBPF_JNE_K = 0x55;
const EBPF_EXIT = 0x95;
const [R0, R1, R6, R7] = [0, 1, 6, 7];

/**
 * A classic program of the instructions above as eBPF, one instruction for one, so that jumps keep
 * their offsets: A is R0 and X is R7, and R6 holds the packet for the absolute loads (which, as in
 * classic BPF, end the program with 0 past the packet's end). ALU and load opcodes are the same
 * in both; the 32-bit ALU keeps classic BPF's unsigned 32-bit arithmetic.
 */
function toExtendedBpf(program: Int32Array): Uint8Array {
  const out: Array<[number, number, number, number, number]> = [
    [EBPF_MOV64_X, R6, R1, 0, 0],
    [EBPF_MOV32_K, R0, 0, 0, 0],
    [EBPF_MOV32_K, R7, 0, 0, 0],
  ];
  for (let i = 0; i < program.length; i += 4) {
    const [code, jt, jf, k] = program.subarray(i, i + 4);
    switch (code) {
      case LD_W_ABS:
      case LD_H_ABS:
      case LD_B_ABS:
      case ALU_RSH_K:
      case ALU_MUL_K:
      case ALU_MOD_K:
      case ALU_AND_K:
        out.push([code, R0, 0, 0, k]);
        break;
      case ALU_XOR_X:
        out.push([code, R0, R7, 0, 0]);
        break;
      case TAX:
        out.push([EBPF_MOV32_X, R7, R0, 0, 0]);
        break;
      case JMP_JA:
        out.push([JMP_JA, 0, 0, k, 0]);
        break;
      case JMP_JEQ_K:
        // Classic BPF has two targets, eBPF one: one of them must be the next instruction.
        if (jt !== 0 && jf !== 0) throw new Error(`steering: JEQ at ${i / 4} has two jump targets`);
        if (k < 0)
          throw new Error(`steering: JEQ at ${i / 4} compares with ${k >>> 0}, which a 64-bit compare sign-extends`);
        out.push(jt === 0 ? [EBPF_JNE_K, R0, 0, jf, k] : [EBPF_JEQ_K, R0, 0, jt, k]);
        break;
      case RET_A:
        out.push([EBPF_EXIT, 0, 0, 0, 0]);
        break;
      default:
        throw new Error(`steering: opcode 0x${code.toString(16)} has no eBPF form here`);
    }
  }
  // Registers as the kernel's bitfields lay them out on little-endian machines (x86-64, arm64).
  const bytes = new Uint8Array(out.length * 8);
  const view = new DataView(bytes.buffer);
  out.forEach(([code, dst, src, off, imm], n) => {
    view.setUint8(n * 8, code);
    view.setUint8(n * 8 + 1, (src << 4) | dst);
    view.setInt16(n * 8 + 2, off, true);
    view.setInt32(n * 8 + 4, imm, true);
  });
  return bytes;
}
