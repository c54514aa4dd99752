// The addon keeps its own copy of the descriptor layout (native/src/descriptor.h); it must agree
// with the one the Wasm hot path was compiled from (assembly/descriptor.ts, in build/weft.wasm).
import { describe, expect, it } from "vitest";
import { createHotPathMemory, HotPath } from "../../src/hotpath/module.js";
import { native } from "../../src/io/native.js";

const SHARED = [
  "DESC_BYTES",
  "DESC_OFF",
  "DESC_CAP",
  "DESC_LEN",
  "DESC_ADDR",
  "DESC_PORT",
  "DESC_FLAGS",
  "DESC_VERDICT",
  "DESC_AUX",
  "HEADROOM",
  "MAX_BATCH",
  "DESC_FLAG_ADDR6",
  "DESC_FLOW_TAG_SHIFT",
] as const;

describe("batch descriptor", () => {
  it("has the same layout in the addon and in the Wasm hot path", () => {
    const hotPath = new HotPath(createHotPathMemory());
    for (const name of SHARED) expect(native[name], name).toBe(hotPath.constant(name));
  });

  it("leaves room for the virtio_net_hdr in the headroom", () => {
    expect(native.VNET_HDR_BYTES).toBe(12);
    expect(native.VNET_HDR_BYTES).toBeLessThanOrEqual(native.HEADROOM);
  });
});
