// Batch memory for the I/O tests and benchmark, laid out as the dataplane lays it out: one shared
// WebAssembly.Memory holding the descriptors and, after them, fixed-size slots that keep HEADROOM
// bytes free in front of each packet.
import { native } from "../../src/io/native.js";

const { DESC_BYTES, DESC_OFF, DESC_CAP, DESC_LEN, DESC_ADDR, DESC_PORT, DESC_FLAGS, HEADROOM, MAX_BATCH } = native;
const W = (byteOffset: number) => byteOffset >> 2;
const WORDS = W(DESC_BYTES);

export const SLOT_BYTES = 2048;
export const FIELD = {
  OFF: W(DESC_OFF),
  CAP: W(DESC_CAP),
  LEN: W(DESC_LEN),
  ADDR: W(DESC_ADDR),
  PORT: W(DESC_PORT),
  FLAGS: W(DESC_FLAGS),
} as const;

export class Slots {
  readonly memory = new WebAssembly.Memory({ initial: 16, maximum: 64, shared: true });
  readonly buf = new Uint8Array(this.memory.buffer);
  readonly descs: Int32Array;
  readonly base: number;

  constructor(
    readonly size = MAX_BATCH,
    readonly slotBytes = SLOT_BYTES,
  ) {
    this.descs = new Int32Array(this.memory.buffer, 0, size * WORDS);
    this.base = size * DESC_BYTES;
    this.reset();
  }

  /** Points every descriptor at its slot (OFF after the headroom) with the slot's capacity. */
  reset(): void {
    for (let i = 0; i < this.size; i++) {
      this.set(i, {
        OFF: this.base + i * this.slotBytes + HEADROOM,
        CAP: this.slotBytes - HEADROOM,
        LEN: 0,
        ADDR: 0,
        PORT: 0,
        FLAGS: 0,
      });
    }
  }

  set(i: number, fields: Partial<Record<keyof typeof FIELD, number>>): void {
    for (const [name, value] of Object.entries(fields))
      this.descs[i * WORDS + FIELD[name as keyof typeof FIELD]] = value;
  }

  get(i: number, name: keyof typeof FIELD): number {
    return this.descs[i * WORDS + FIELD[name]];
  }

  /** Copies `packet` into slot i and sets LEN. */
  put(i: number, packet: Uint8Array): void {
    this.buf.set(packet, this.get(i, "OFF"));
    this.set(i, { LEN: packet.length });
  }

  /** A copy of packet i (LEN bytes at OFF). */
  packet(i: number): Uint8Array {
    const off = this.get(i, "OFF");
    return this.buf.slice(off, off + this.get(i, "LEN"));
  }
}
