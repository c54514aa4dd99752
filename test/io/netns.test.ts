// withNetns: what is created inside lands in the namespace, and the thread always comes back.
import { describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { promisify } from "node:util";
import { withNetns } from "../../src/io/netns.js";
import { TunQueue } from "../../src/io/tun.js";
import { canUseNetns, Netns } from "../support/netns.js";

const run = promisify(execFile);
const currentNetns = () => statSync("/proc/thread-self/ns/net").ino;

describe.skipIf(!canUseNetns())("withNetns", () => {
  it("creates devices in the namespace and returns the thread, also when the work throws", async () => {
    const ns = await Netns.create("enter");
    const home = currentNetns();
    try {
      const q = withNetns(ns.name, () => {
        expect(currentNetns()).not.toBe(home);
        return TunQueue.open("wt-enter");
      });
      try {
        expect(currentNetns()).toBe(home);
        expect(await ns.ip("-o link show wt-enter")).toMatch(/wt-enter/);
        await expect(run("ip", ["-o", "link", "show", "wt-enter"])).rejects.toThrow(); // not in ours
      } finally {
        q.close();
      }

      expect(() =>
        withNetns(ns.name, () => {
          throw new Error("boom");
        }),
      ).toThrow("boom");
      expect(currentNetns()).toBe(home);
    } finally {
      await ns.destroy();
    }
  });

  it("refuses async work and unknown namespaces without leaving home", () => {
    const home = currentNetns();
    // @ts-expect-error -- the type forbids it too
    expect(() => withNetns("weft-t-none", async () => 1)).toThrow(
      expect.objectContaining({ code: "ENOENT", syscall: "open" }),
    );
    expect(currentNetns()).toBe(home);
  });
});
