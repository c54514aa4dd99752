import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { internetChecksum, onesSum } from "../reference/checksum.js";

const hp = new HotPath(createHotPathMemory());
const buf = new Arena(hp).alloc(70000);

describe("Internet checksum", () => {
  it("equals the reference for any bytes, any length, any alignment", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.integer({ min: 0, max: 15 }), (bytes, shift) => {
        hp.bytes().set(bytes, buf + shift);
        expect(hp.fn.checksum(buf + shift, bytes.length)).toBe(internetChecksum(bytes));
      }),
      { numRuns: 500 },
    );
  });

  it("equals the reference on 64 KiB of 0xff (the 32-bit lanes would overflow without spilling)", () => {
    const bytes = new Uint8Array(65535).fill(0xff);
    hp.bytes().set(bytes, buf);
    expect(hp.fn.checksum(buf, bytes.length)).toBe(internetChecksum(bytes));
  });

  it("continues a partial sum (pseudo-header seed)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 0xffff }), (bytes, seed) => {
        hp.bytes().set(bytes, buf);
        const even = bytes.length & ~1;
        expect(hp.fn.checksumPartial(buf, even, seed)).toBe(onesSum(bytes.subarray(0, even), seed));
      }),
    );
  });
});
