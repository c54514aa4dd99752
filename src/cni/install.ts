// Putting `weft cni` on CNI's path under the type name runtimes look for (`flannel`): a small
// launcher script that runs this installation's Node.js on the plugin's entry point. With
// `bundle`, Node.js itself and the plugin's few files are copied next to it, for hosts (a
// Kubernetes node) that have no Node.js: the init container of deploy/kubernetes/weft.yaml.
import { copyFile, cp, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { projectFile } from "../paths.js";

export const PLUGIN_NAME = "flannel";

/** dist/src/cni/main.js of this installation (also when this module runs from src/, in tests). */
export function pluginEntry(): string {
  return projectFile("dist", "src", "cni", "main.js");
}

function launcher(node: string, entry: string): string {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  return `#!/bin/sh\n# weft's CNI plugin, compatible with flannel's (same config, same subnet.env).\nexec ${q(node)} ${q(entry)} "$@"\n`;
}

/** Writes `<binDir>/<name>`; returns its path. */
export async function installPlugin(binDir: string, opts: { name?: string; bundle?: boolean } = {}): Promise<string> {
  const target = join(binDir, opts.name ?? PLUGIN_NAME);
  let node = process.execPath;
  let entry = pluginEntry();
  if (opts.bundle) {
    // Only what the plugin loads: its own modules, the error root, the atomic write helper, zod and Node.js.
    const dir = join(binDir, "weft-cni");
    const staging = `${dir}.${process.pid}.tmp`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(join(staging, "dist", "src", "fs"), { recursive: true });
    await cp(dirname(entry), join(staging, "dist", "src", "cni"), { recursive: true });
    for (const file of [["fs", "atomic-write.js"], ["errors.js"]])
      await copyFile(projectFile("dist", "src", ...file), join(staging, "dist", "src", ...file));
    await cp(projectFile("node_modules", "zod"), join(staging, "node_modules", "zod"), { recursive: true });
    await writeFile(join(staging, "package.json"), JSON.stringify({ name: "weft-cni", private: true, type: "module" }));
    await copyFile(process.execPath, join(staging, "node"));
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    node = join(dir, "node");
    entry = join(dir, "dist", "src", "cni", "main.js");
  }
  await writeFileAtomic(target, launcher(node, entry), { mode: 0o755 });
  return target;
}
