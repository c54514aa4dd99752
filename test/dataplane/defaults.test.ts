// The dataplane's default worker count: one per core within the bounds the config schema allows,
// so that a host of many cores runs without a Backend.Workers of its own (above 64 workers the
// TUN driver's 256 queues ran out, and the dataplane refused to start).
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../../src/config/net-conf.js";
import { DEFAULT_MIN_WORKERS, defaultWorkers } from "../../src/dataplane/defaults.js";

describe("defaultWorkers", () => {
  it("is one per core, at least DEFAULT_MIN_WORKERS, at most the 64 that Backend.Workers takes", () => {
    expect(defaultWorkers(2)).toBe(DEFAULT_MIN_WORKERS);
    expect(defaultWorkers(12)).toBe(12);
    expect(defaultWorkers(300)).toBe(64);
    const conf = (workers: number) =>
      parseNetConf(JSON.stringify({ Network: "198.19.0.0/16", Backend: { Type: "wasm-vxlan", Workers: workers } }));
    expect(conf(defaultWorkers(300)).Backend).toMatchObject({ Workers: 64 });
    expect(() => conf(65)).toThrow();
  });
});
