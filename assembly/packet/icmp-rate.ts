// The rate limit on the ICMP and ICMPv6 errors the send path writes back into the TUN device: a
// token bucket as Linux's global one (net.ipv4.icmp_msgs_per_sec 1000, icmp_msgs_burst 50), one
// per worker, shared by the contexts of the pairs it serves. Wasm has no clock: the worker writes
// a coarse monotonic time into the bucket before each send batch, and tokens are taken only when
// an error is about to be written, so a batch without errors never looks at the bucket.

/** Milliseconds (u32, wrapping) of the worker's monotonic clock, written before each send batch. */
export const ICMP_BUCKET_NOW: i32 = 0;
/** The time of the last refill. */
const ICMP_BUCKET_STAMP: i32 = 4;
/** Errors that may be written now, at most ICMP_ERRORS_BURST. */
const ICMP_BUCKET_TOKENS: i32 = 8;
export const ICMP_BUCKET_BYTES: i32 = 16;

/** Errors per second a bucket refills by, and the most it holds: Linux's defaults. */
export const ICMP_ERRORS_PER_SEC: u32 = 1000;
export const ICMP_ERRORS_BURST: u32 = 50;

/** A full bucket. */
export function icmpBucketInit(b: usize): void {
  store<u32>(b + ICMP_BUCKET_NOW, 0);
  store<u32>(b + ICMP_BUCKET_STAMP, 0);
  store<u32>(b + ICMP_BUCKET_TOKENS, ICMP_ERRORS_BURST);
}

/**
 * Takes a token if there is one, refilling first for the time since the last refill. A second
 * or more (a clock that went back, as a replaced worker's, looks like much more) fills it up.
 * A refill happens only once it yields a whole token, so a slow rate loses no fractions.
 */
@inline export function icmpBucketTake(b: usize): bool {
  const now = load<u32>(b + ICMP_BUCKET_NOW);
  let tokens = load<u32>(b + ICMP_BUCKET_TOKENS);
  let elapsed = now - load<u32>(b + ICMP_BUCKET_STAMP);
  if (elapsed > 1000) elapsed = 1000;
  const gained = (elapsed * ICMP_ERRORS_PER_SEC) / 1000;
  if (gained > 0) {
    tokens = tokens + gained > ICMP_ERRORS_BURST ? ICMP_ERRORS_BURST : tokens + gained;
    store<u32>(b + ICMP_BUCKET_STAMP, now);
  }
  if (tokens == 0) return false;
  store<u32>(b + ICMP_BUCKET_TOKENS, tokens - 1);
  return true;
}
