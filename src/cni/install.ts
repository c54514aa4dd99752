// Putting `weft cni` on CNI's path under the type name runtimes look for (`flannel`): a small
// launcher script that runs this installation's Node.js on the plugin's entry point. With
// `bundle`, Node.js itself and the plugin's few files are copied next to it, for hosts (a
// Kubernetes node) that have no Node.js: the init container of deploy/kubernetes/weft.yaml.
import {
  chmod,
  copyFile,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { execFile } from "node:child_process";
import type { Server } from "node:net";
import { basename, dirname, join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { errorMessage, WeftError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { projectFile } from "../paths.js";
import { bindAbstractWithin } from "../util/abstract-socket.js";
import { timeoutProgram } from "./exec.js";

export const PLUGIN_NAME = "flannel";

/**
 * How long a bundle's copy stays once the launcher names another: a run that read the older
 * launcher may still be starting its Node.js and loading the plugin's modules (seconds under load),
 * while the init container runs again, twice if kubelet restarts the pod quickly.
 */
export const BUNDLE_GRACE_MS = 10 * 60_000;

/** Superseded copies kept at most, the newest by number, whatever their age: a burst of installs must not leave ~100 MB each. */
export const BUNDLE_KEEP_SUPERSEDED = 3;

/** dist/src/cni/entry.js of this installation (also when this module runs from src/, in tests). */
export function pluginEntry(): string {
  return projectFile("dist", "src", "cni", "entry.js");
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** A bundle's `node` and `entry` are relative to the launcher's directory, the others absolute. */
function launcher(node: string, entry: string, bundled: boolean): string {
  const head = "#!/bin/sh\n# weft's CNI plugin, compatible with flannel's (same config, same subnet.env).\n";
  if (!bundled) return `${head}exec ${quote(node)} ${quote(entry)} "$@"\n`;
  // The bundle is found beside this script as the runtime runs it: the init container that wrote
  // it may have the host's bin dir mounted at another path (flannel's chart: cniBinDir). A bare
  // name (`sh flannel` in the bin dir) has no slash to cut at: `${0%/*}` would be the name itself.
  // No dirname: a runtime may run plugins with a PATH that lacks it.
  return `${head}case $0 in */*) d=\${0%/*} ;; *) d=. ;; esac\nexec "$d"/${quote(node)} "$d"/${quote(entry)} "$@"\n`;
}

/** Copies Node.js and what the plugin loads into a new directory of binDir; returns [node, entry], relative to binDir. */
async function bundle(binDir: string, name: string): Promise<[string, string]> {
  // A new directory each time, never one a runtime may be running the plugin from.
  await mkdir(binDir, { recursive: true });
  let dir = await mkdtemp(join(binDir, `weft-cni.${name}.`));
  try {
    await chmod(dir, 0o755);
    // Only what the plugin loads (its modules and theirs, found by their imports: a list kept by
    // hand missed a module one of them came to import), zod and Node.js.
    const dist = projectFile("dist");
    for (const file of await pluginModules(pluginEntry())) {
      const to = join(dir, "dist", relative(dist, file));
      await mkdir(dirname(to), { recursive: true });
      await copyFile(file, to);
    }
    await cp(projectFile("node_modules", "zod"), join(dir, "node_modules", "zod"), { recursive: true });
    await writeFile(join(dir, "package.json"), JSON.stringify({ name: "weft-cni", private: true, type: "module" }));
    await copyFile(process.execPath, join(dir, "node.part"));
    // Numbered once filled, one past the newest copy: the order in which copies were made, which
    // their files' times are not once the clock is set back. Then `node` appears last and whole:
    // another install takes a copy without it as one being filled.
    const numbered = join(
      binDir,
      `weft-cni.${name}.${(await newestCopy(binDir, name)) + 1}.${basename(dir).slice(-6)}`,
    );
    await rename(dir, numbered);
    dir = numbered;
    await rename(join(dir, "node.part"), join(dir, "node"));
  } catch (err) {
    await rm(dir, { recursive: true, force: true }); // a full disk must not keep ~100 MB of a copy no launcher names
    throw err;
  }
  const copy = basename(dir);
  return [join(copy, "node"), join(copy, "dist", "src", "cni", "entry.js")];
}

/**
 * The compiled modules `entry` loads, itself included: relative imports followed from file to
 * file. Other imports may be Node.js's own or zod, which the bundle has; anything else would be
 * missing from it, so it is refused here rather than when a runtime runs the plugin.
 */
export async function pluginModules(entry: string): Promise<string[]> {
  const found = new Set<string>([entry]);
  for (const file of found) {
    const text = await readFile(file, "utf8");
    const specs = text.matchAll(/^(?:import|export)\s[^;"'`]*?\bfrom\s*["']([^"']+)["']|^import\s*["']([^"']+)["']/gm);
    for (const [, from, bare] of specs) {
      const spec = from ?? bare;
      if (spec.startsWith(".")) found.add(resolve(dirname(file), spec));
      else if (!spec.startsWith("node:") && spec !== "zod")
        throw new WeftError(
          "CNI_BUNDLE_INCOMPLETE",
          `${file} imports ${spec}, which a bundled CNI plugin does not have (only Node.js's own modules and zod): install without --bundle on a host with Node.js, or use a weft release whose plugin imports nothing else`,
        );
    }
  }
  return [...found];
}

/**
 * Writes `<binDir>/<name>`; returns its path. The launcher is replaced atomically, so a runtime
 * running the plugin meanwhile (an agent pod restarting) gets the old one or the new one, both whole.
 */
export async function installPlugin(binDir: string, opts: { name?: string; bundle?: boolean } = {}): Promise<string> {
  const name = opts.name ?? PLUGIN_NAME;
  // A dot would make another name's copies look like this one's (`weft-cni.a.1.XXXXXX` being
  // filled for `a.1` is copy 1 of `a`), and expiring them would remove a live plugin's copy;
  // `weft-cni` is weft 0.1.0's bundle directory, which every name's install expires.
  if (!/^[A-Za-z0-9_-]+$/.test(name) || name === "weft-cni")
    throw new WeftError(
      "CNI_INSTALL_BAD_NAME",
      `--name ${JSON.stringify(name)}: a plugin type installed by weft is letters, digits, '-' and '_' only (no '.' or '/'), and not weft-cni (the name of weft 0.1.0's bundle); name it so, and the network config's "type" the same`,
    );
  // A bundle is written from a container (the init container) whose timeout is not the host's:
  // there a plugin run on the host says so instead (5).
  if (!opts.bundle) await requireKillAfterTimeout();
  const target = join(binDir, name);
  await mkdir(binDir, { recursive: true });
  const lock = await installLock(binDir);
  try {
    // Expired copies go first, so that an install can free the disk it needs.
    await expireBundles(binDir, name);
    const [node, entry] = opts.bundle ? await bundle(binDir, name) : [process.execPath, pluginEntry()];
    await writeFileAtomic(target, launcher(node, entry, opts.bundle === true), { mode: 0o755 });
    await expireBundles(binDir, name, opts.bundle ? dirname(node) : undefined);
  } finally {
    lock.close();
  }
  return target;
}

/**
 * The plugin runs every delegate under the host's timeout with --kill-after (see execPlugin):
 * without one, or with one refusing it (busybox's), every pod operation would fail; refused now
 * instead. Tried rather than named: coreutils' (GNU's) and uutils' (Ubuntu 25.10's) both take it.
 */
async function requireKillAfterTimeout(): Promise<void> {
  let why: string;
  try {
    const file = timeoutProgram();
    // Bounded itself, so that a timeout that hangs cannot hang the install.
    const tried = await promisify(execFile)(file, ["--kill-after=1s", "1s", "true"], { timeout: 10_000 }).then(
      () => undefined,
      (e: { stderr?: string }) => e.stderr?.trim().split("\n")[0] || errorMessage(e),
    );
    if (tried === undefined) return;
    why = `\`${file} --kill-after=1s 1s true\` failed (${tried})`;
  } catch (e) {
    why = errorMessage(e);
  }
  throw new WeftError(
    "CNI_INSTALL_NO_TIMEOUT",
    `the plugin runs its delegate under timeout --kill-after, and ${why}: install coreutils, GNU's or uutils' (Debian: apt-get install coreutils), then install again`,
  );
}

/** How long an install waits for others into the same bin dir: each copies ~100 MB with --bundle, on a disk maybe slow. */
const INSTALL_LOCK_WAIT_MS = 5 * 60_000;

/**
 * Held for a whole install, so that installs into one bin dir (init containers of agent pods
 * restarted at once, a hand's install) run one at a time: overlapping, one that numbered its copy
 * first but wrote the launcher last had that copy removed meanwhile by a third, which saw it
 * superseded, and its launcher then named nothing. An abstract socket as the plugin's locks (no
 * stale lock file; Node.js has no flock), named after the bin dir's device and inode, the same
 * through an init container's mount as at the host's path. It is seen only within one network
 * namespace (the agent pod's is the host's): installs from others still overlap, for which
 * expireBundles keeps its guards.
 */
async function installLock(binDir: string): Promise<Server> {
  const { dev, ino } = await stat(binDir, { bigint: true }); // an inode past 2^53 (XFS, btrfs) keeps its digits
  const lock = await bindAbstractWithin(`\0weft-install-cni:${dev}:${ino}`, INSTALL_LOCK_WAIT_MS);
  if (!lock)
    throw new WeftError(
      "CNI_INSTALL_BUSY",
      `another weft install-cni into ${binDir} still ran after ${INSTALL_LOCK_WAIT_MS / 60_000} min: find it by its socket (\`ss -xlp | grep @weft-install-cni\`), end it if it hangs, and install again`,
    );
  return lock;
}

/**
 * A copy of binDir's bundles for `name` that its launcher no longer names is stamped `superseded`
 * by the first install that finds it so, and removed by one BUNDLE_GRACE_MS later, or once
 * BUNDLE_KEEP_SUPERSEDED newer copies (by number) were superseded too: keeping the newest two failed a run that
 * read a launcher two installs back. Never a copy as new (by its number) as the one the launcher
 * names when it is removed, nor `own` (the copy this install just named): installs overlapping within milliseconds
 * stamp and count copies other installs are about to name. The plugin's modules are all imported
 * statically, so a run reads its copy only while it starts. (A bare `weft-cni` is the bundle's
 * directory of weft 0.1.0; launchers before this one named their bundle by its absolute path.)
 */
export async function expireBundles(binDir: string, name: string, own?: string): Promise<void> {
  const target = join(binDir, name);
  const named = await readFile(target, "utf8").catch(() => "");
  const entries = await readdir(binDir).catch((err) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  const superseded: { dir: string; since: number }[] = [];
  for (const old of entries) {
    if (!(old.startsWith(`weft-cni.${name}.`) || old === "weft-cni") || named.includes(`${old}/node'`)) continue;
    const dir = join(binDir, old);
    // Copies are directories: a file so named is another plugin (one installed as `weft-cni`).
    if (!(await isDirectory(dir))) continue;
    const since = await mtime(join(dir, "superseded"));
    if (since !== undefined) superseded.push({ dir, since });
    else if ((await mtime(join(dir, "node"))) !== undefined) {
      // Best effort: an unstamped copy is only kept longer, and the launcher may be written already.
      await writeFile(join(dir, "superseded"), "").then(
        () => superseded.push({ dir, since: Date.now() }),
        (err) => process.stderr.write(`weft install-cni: ${dir} stays, not marked superseded: ${err.message}\n`),
      );
    } else if (Date.now() - ((await mtime(dir)) ?? Date.now()) > BUNDLE_GRACE_MS)
      // Being filled by another install, unless that long untouched (an install killed meanwhile).
      await rm(dir, { recursive: true, force: true });
  }
  // Newest first by number, which a clock stepped between installs leaves in order, as stamps are not.
  const rank = (dir: string) => copyNumber(basename(dir), name);
  superseded.sort((a, b) => rank(b.dir) - rank(a.dir) || b.since - a.since);
  for (const [i, { dir, since }] of superseded.entries()) {
    if (!(i >= BUNDLE_KEEP_SUPERSEDED || Date.now() - since > BUNDLE_GRACE_MS)) continue;
    // The launcher read again: another install may have named a copy since, or be about to name
    // one it has just filled, which is newer than the one named now.
    const current = await namedCopy(binDir, name);
    const younger = current !== undefined && rank(dir) >= copyNumber(current, name);
    if (basename(dir) === own || basename(dir) === current || younger) continue;
    await rm(dir, { recursive: true, force: true });
  }
  // Another install running meanwhile may have stamped the copy the launcher names now, having read
  // the launcher before it was written: the install that wrote it, or the one that stamped it, reads
  // it again after and takes the stamp off. (Copies are stamped only whole, so never while being
  // filled, which would leave the stamp aging.)
  const current = await namedCopy(binDir, name);
  if (current) await rm(join(binDir, current, "superseded"), { force: true });
}

/** The copy binDir's launcher for `name` names. */
async function namedCopy(binDir: string, name: string): Promise<string | undefined> {
  return /(weft-cni[^/']*)\/node'/.exec(await readFile(join(binDir, name), "utf8").catch(() => ""))?.[1];
}

/**
 * A copy's number (`weft-cni.<name>.<n>.XXXXXX`), -1 for one being filled or of a weft before
 * numbers (older than any numbered one). Copies filled at once may share one: each is as new as the other.
 */
function copyNumber(copy: string, name: string): number {
  const n = copy.startsWith(`weft-cni.${name}.`) ? /^(\d+)\./.exec(copy.slice(`weft-cni.${name}.`.length)) : null;
  return n ? Number(n[1]) : -1;
}

/** The highest number of binDir's copies for `name`: never lowered, as no copy as new as the one the launcher names is removed. */
async function newestCopy(binDir: string, name: string): Promise<number> {
  return Math.max(-1, ...(await readdir(binDir)).map((copy) => copyNumber(copy, name)));
}

const isDirectory = (path: string) =>
  lstat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );

const mtime = (path: string) =>
  stat(path).then(
    (s) => s.mtimeMs,
    () => undefined,
  );
