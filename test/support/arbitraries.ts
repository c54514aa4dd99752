// fast-check arbitraries shared by the hot-path tests. Apart from hotpath.ts and offload.ts, which
// bench:micro imports and an installed package ships (`weft bench` runs it), where fast-check, a
// devDependency, is not installed.
import fc from "fast-check";

/** Milliseconds between send batches for icmpClock, to draw: the bucket runs dry at times, and refills. */
export const ICMP_TICKS = fc.oneof(
  { arbitrary: fc.constant(0), weight: 4 },
  { arbitrary: fc.integer({ min: 1, max: 20 }), weight: 2 },
  { arbitrary: fc.constantFrom(50, 1000, 5000), weight: 1 },
);

/** Interleaving picks and GRO run lengths, for the coalescing properties. */
export const PICKS = fc.array(fc.nat(), { minLength: 1, maxLength: 20 });
export const GRO_MAXES = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 10 });
