// A classic BPF interpreter for the steering program's property tests: the opcodes
// src/dataplane/steering.ts emits, with linux/filter.h semantics (net/core/filter.c): 32-bit
// unsigned A and X, big-endian absolute loads, and a load past the packet's end ends the program
// with return value 0. Any other opcode throws, so that a program the reference does not cover
// cannot pass by accident.

// Instruction classes and fields (linux/bpf_common.h).
const CLASS = 0x07;
const [LD, ALU, JMP, RET, MISC] = [0x00, 0x04, 0x05, 0x06, 0x07];
const SIZE = 0x18;
const MODE = 0xe0;
const ABS = 0x20;
const OP = 0xf0;
const SRC_X = 0x08;
/** Load size in bytes by the size field: W (0x00), H (0x08), B (0x10). */
const SIZES = new Map([
  [0x00, 4],
  [0x08, 2],
  [0x10, 1],
]);
const [JA, JEQ] = [0x00, 0x10];
const [MUL, AND, RSH, MOD, XOR] = [0x20, 0x50, 0x70, 0x90, 0xa0];
const RVAL_A = 0x10;
const TAX = 0x00;

/** Runs `program` ([code, jt, jf, k] per instruction, as the native addon takes it) over `packet`. */
export function runClassicBpf(program: Int32Array, packet: Uint8Array): number {
  let a = 0;
  let x = 0;
  for (let pc = 0; pc * 4 < program.length; pc++) {
    const [code, jt, jf] = [program[pc * 4], program[pc * 4 + 1], program[pc * 4 + 2]];
    const k = program[pc * 4 + 3] >>> 0;
    const bad = () => new Error(`cbpf: opcode 0x${code.toString(16)} at ${pc} is not in the reference`);
    switch (code & CLASS) {
      case LD: {
        const size = SIZES.get(code & SIZE);
        if ((code & MODE) !== ABS || size === undefined) throw bad();
        if (k + size > packet.length) return 0;
        a = 0;
        for (let i = 0; i < size; i++) a = ((a << 8) | packet[k + i]) >>> 0;
        break;
      }
      case ALU: {
        const v = code & SRC_X ? x : k;
        switch (code & OP) {
          case MUL:
            a = Math.imul(a, v) >>> 0;
            break;
          case AND:
            a = (a & v) >>> 0;
            break;
          case RSH:
            a = v >= 32 ? 0 : a >>> v;
            break;
          case MOD:
            if (v === 0) return 0; // the kernel refuses a constant 0 when loading; X = 0 ends the run with 0
            a = a % v;
            break;
          case XOR:
            a = (a ^ v) >>> 0;
            break;
          default:
            throw bad();
        }
        break;
      }
      case JMP:
        if ((code & OP) === JA) pc += k;
        else if ((code & OP) === JEQ && !(code & SRC_X)) pc += a === k ? jt : jf;
        else throw bad();
        break;
      case RET:
        if ((code & 0x18) !== RVAL_A) throw bad();
        return a;
      case MISC:
        if ((code & 0xf8) !== TAX) throw bad();
        x = a;
        break;
      default:
        throw bad();
    }
  }
  throw new Error("cbpf: ran off the end of the program (the kernel refuses such a program)");
}
