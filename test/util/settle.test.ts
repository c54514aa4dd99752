// settleAll: the values in order when every part succeeds; otherwise the first failure, but only
// once every part has settled (a bench workload's tools, teardowns).
import { describe, expect, it } from "vitest";
import { settleAll } from "../../src/util/settle.js";

const settledIn = <T>(ms: number, value: T, fail = false) =>
  new Promise<T>((resolve, reject) => setTimeout(() => (fail ? reject(new Error(String(value))) : resolve(value)), ms));

describe("settleAll", () => {
  it("gives every value, in order, typed per part", async () => {
    const [a, b] = await settleAll([settledIn(20, 1), settledIn(5, "two")]);
    expect([a, b]).toEqual([1, "two"]);
  });

  it("rejects with the first failure in part order, and only after the slowest part has finished", async () => {
    let slowDone = false;
    const slow = settledIn(60, "slow").then((v) => {
      slowDone = true;
      return v;
    });
    const outcome = settleAll([settledIn(30, "late", true), settledIn(5, "early", true), slow]);
    await expect(outcome).rejects.toThrow("late");
    expect(slowDone).toBe(true);
  });
});
