// Spreading flows over the queue pairs (and so the workers) on receive. All datagrams from one peer share one outer
// 4-tuple (weft sends from its bound port), so SO_REUSEPORT's own hash would hand every flow from
// that peer to one socket. Instead a classic BPF program on the reuseport group hashes the *inner*
// flow — addresses and ports of the carried IPv4 or IPv6 packet (the dataplane's family) — and
// picks the socket from it. The worker serving that socket writes the flow's packets on the TUN
// queue of the socket's pair, and the kernel steers the replies of that flow back to the same
// queue, so both directions of a flow stay on one pair.
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

/**
 * The program for `sockets` sockets: index = hash(inner source and destination, and the 4 bytes
 * after the fixed header — TCP/UDP ports) mod sockets, the hash a multiplicative (Fibonacci) one.
 * For ICMP those 4 bytes are type, code and checksum, which differ between a request and its reply
 * and from one echo to the next: the echo identifier (bytes 4–5) stands in for the ports, so that
 * every echo of one ping lands on one pair. Its worker writes it on the pair's TUN queue, the TUN's
 * flow table sends the reply back on the same queue, and the thread that is already awake forwards
 * it (a checksum-hashed echo woke the host's other worker on about half the round trips). A
 * datagram too short for the loads makes the program return 0 (the first socket), which is fine
 * for garbage.
 */
export function innerFlowSteering(format: WireFormat, sockets: number, family: 4 | 6 = 4): Int32Array {
  const ip = INNER_IP[format];
  const { words, protocol, icmp, l4 } = LAYOUT[family];
  const insns: Array<[number, number, number, number]> = [
    [LD_W_ABS, 0, 0, ip + words[0]], // A = first address word
    // Every other address word XORed into A through X.
    ...words.slice(1).flatMap(
      (w): Array<[number, number, number, number]> => [
        [TAX, 0, 0, 0], // X = A
        [LD_W_ABS, 0, 0, ip + w],
        [ALU_XOR_X, 0, 0, 0], // A ^= X
      ],
    ),
    [TAX, 0, 0, 0],
    [LD_B_ABS, 0, 0, ip + protocol], // A = protocol (next header)
    [JMP_JEQ_K, 0, 2, icmp],
    [LD_H_ABS, 0, 0, ip + l4 + 4], // ICMP: A = echo identifier
    [JMP_JA, 0, 0, 1],
    [LD_W_ABS, 0, 0, ip + l4], // otherwise: A = source and destination ports
    [ALU_XOR_X, 0, 0, 0],
    [TAX, 0, 0, 0],
    [ALU_RSH_K, 0, 0, 16], // fold the high half in, so that ports and addresses all count
    [ALU_XOR_X, 0, 0, 0],
    // Multiply and keep high bits: the low bits alone are no hash (Linux gives connect() even
    // ports only, so every flow from one client would land on the same worker).
    [ALU_MUL_K, 0, 0, 0x9e3779b1 | 0],
    [ALU_RSH_K, 0, 0, 16],
    [ALU_MOD_K, 0, 0, sockets],
    [RET_A, 0, 0, 0],
  ];
  return Int32Array.from(insns.flat());
}
