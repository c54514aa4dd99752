// Spreading flows over the workers on receive. All datagrams from one peer share one outer
// 4-tuple (weft sends from its bound port), so SO_REUSEPORT's own hash would hand every flow from
// that peer to one socket. Instead a classic BPF program on the reuseport group hashes the *inner*
// flow — addresses and ports of the carried IPv4 packet — and picks the worker from it. The worker
// then writes the flow's packets on its own TUN queue, and the kernel steers the replies of that
// flow back to the same queue, so both directions of a flow stay on one worker.
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

const IPPROTO_ICMP = 1;

/** Where the inner IPv4 header starts in the UDP payload. */
const INNER_IP: Record<WireFormat, number> = { vxlan: 8 + 14, udp: 0 };

/**
 * The program for `workers` sockets: index = hash(inner src, dst, and the 4 bytes after a
 * 20-byte header — TCP/UDP ports) mod workers, the hash a multiplicative (Fibonacci) one. For ICMP
 * those 4 bytes are type, code and checksum, which differ between a request and its reply and from
 * one echo to the next: the identifier (bytes 4–5) stands in for the ports, so that every echo of
 * one ping lands on one worker. That worker writes it on its own TUN queue, the TUN's flow table
 * sends the reply back on the same queue, and the thread that is already awake forwards it (a
 * checksum-hashed echo woke the host's other worker on about half the round trips).
 * A datagram too short for the loads makes the program return 0 (the first socket), which is fine for garbage.
 */
export function innerFlowSteering(format: WireFormat, workers: number): Int32Array {
  const ip = INNER_IP[format];
  const insns: Array<[number, number, number, number]> = [
    [LD_W_ABS, 0, 0, ip + 12], // A = source address
    [TAX, 0, 0, 0], // X = A
    [LD_W_ABS, 0, 0, ip + 16], // A = destination address
    [ALU_XOR_X, 0, 0, 0], // A ^= X
    [TAX, 0, 0, 0],
    [LD_B_ABS, 0, 0, ip + 9], // A = protocol
    [JMP_JEQ_K, 0, 2, IPPROTO_ICMP],
    [LD_H_ABS, 0, 0, ip + 24], // ICMP: A = echo identifier
    [JMP_JA, 0, 0, 1],
    [LD_W_ABS, 0, 0, ip + 20], // otherwise: A = source and destination ports
    [ALU_XOR_X, 0, 0, 0],
    [TAX, 0, 0, 0],
    [ALU_RSH_K, 0, 0, 16], // fold the high half in, so that ports and addresses all count
    [ALU_XOR_X, 0, 0, 0],
    // Multiply and keep high bits: the low bits alone are no hash (Linux gives connect() even
    // ports only, so every flow from one client would land on the same worker).
    [ALU_MUL_K, 0, 0, 0x9e3779b1 | 0],
    [ALU_RSH_K, 0, 0, 16],
    [ALU_MOD_K, 0, 0, workers],
    [RET_A, 0, 0, 0],
  ];
  return Int32Array.from(insns.flat());
}
