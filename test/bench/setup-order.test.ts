// weft bench runs every workload of a round on the setups in one order: over the rounds that
// order must vary enough that no setup always follows the same one (and inherits its leftovers).
import { describe, expect, it } from "vitest";
import { setupOrder } from "../../src/bench/run.js";

/** The setups' sequence as runBench plans it: round by round, each workload on every setup. */
function sequence(names: string[], rounds: number, workloads: number): string[] {
  const out: string[] = [];
  for (let round = 1; round <= rounds; round++)
    for (let w = 0; w < workloads; w++) out.push(...setupOrder(names, round));
  return out;
}

describe("setupOrder", () => {
  it("runs every setup once per round", () => {
    const names = ["vxlan", "host-gw", "wasm-vxlan", "udp"];
    for (let round = 1; round <= 6; round++) expect([...setupOrder(names, round)].sort()).toEqual([...names].sort());
  });

  it("starts each round with another setup: over n rounds each goes first once, two alternate", () => {
    for (const n of [2, 3, 4, 5, 6]) {
      const names = Array.from({ length: n }, (_, i) => `s${i}`);
      const firsts = Array.from({ length: n }, (_, r) => setupOrder(names, r + 1)[0]);
      expect(new Set(firsts).size, `${n} setups`).toBe(n);
    }
    expect([1, 2, 3, 4].map((r) => setupOrder(["vxlan", "wasm-vxlan"], r).join())).toEqual([
      "vxlan,wasm-vxlan",
      "wasm-vxlan,vxlan",
      "vxlan,wasm-vxlan",
      "wasm-vxlan,vxlan",
    ]);
  });

  it("gives each setup at least two different predecessors over three rounds", () => {
    for (const n of [3, 4, 5, 6]) {
      const names = Array.from({ length: n }, (_, i) => `s${i}`);
      const seq = sequence(names, 3, 7);
      const before = new Map(names.map((x) => [x, new Set<string>()]));
      for (let i = 1; i < seq.length; i++) before.get(seq[i])!.add(seq[i - 1]);
      for (const x of names) expect(before.get(x)!.size, `${x} of ${n} setups`).toBeGreaterThanOrEqual(2);
    }
  });
});
