// The flannel CNI plugin's behaviour, for `weft cni`: read the node's subnet.env, turn the
// network config's `delegate` into a complete config for the plugin that builds the pod (the
// reference `bridge` plugin with `host-local` IPAM over this node's subnet, a route to the pod
// network, the MTU, ipMasq and isGateway), keep that config in dataDir, and run it. DEL and CHECK
// run the kept config, so they work even after subnet.env changed; GC deletes those the runtime
// no longer has; GC and DEL remove what the bridge's DEL left of its masquerade rules (all of
// them without the pod's namespace or interface); STATUS says whether subnet.env is there (the
// agent ready).
import { createHash } from "node:crypto";
import type { Server } from "node:net";
import { access, readdir, readFile, rm, stat, utimes } from "node:fs/promises";
import { join, resolve } from "node:path";
import { errorMessage, isWeftError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { Kernel } from "../kernel/iproute.js";
import { DEFAULT_SUBNET_FILE } from "../paths.js";
import { bindAbstract, bindAbstractWithin, descriptorOf } from "../util/abstract-socket.js";
import { cidrContains, firstHostOf, networkOf, parseCidr } from "./cidr.js";
import {
  DEFAULT_VERSION,
  parseDelConf,
  parseGcConf,
  parseNetConf,
  parseSubnetEnvFile,
  SUPPORTED_VERSIONS,
  versionAtLeast,
  type FlannelNetConf,
  type SubnetEnv,
} from "./config.js";
import { asCniError, CNI_ERROR, CniError } from "./errors.js";
import { execPlugin, KILL_AFTER_MS, type CniArgs } from "./exec.js";

/**
 * The delegate's config, as flannel's plugin builds it: delegate keys win over subnet.env's
 * defaults; name, and cniVersion and runtimeConfig when given, are the network's; ipam is the top-level one.
 */
export function delegateConfig(conf: FlannelNetConf, env: SubnetEnv): Record<string, unknown> {
  const d: Record<string, unknown> = { ...conf.delegate };
  d.name = conf.name;
  // As flannel: without a version of its own the config leaves the delegate's (or its default).
  if (conf.cniVersion) d.cniVersion = conf.cniVersion;
  d.type ??= "bridge";
  // Masquerading is done once: by the agent (FLANNEL_IPMASQ=true) or else by the bridge plugin.
  d.ipMasq ??= !env.ipMasq;
  d.mtu ??= env.mtu;
  if (d.type === "bridge") d.isGateway ??= true;
  if (conf.runtimeConfig) d.runtimeConfig = conf.runtimeConfig;
  const ipam: Record<string, unknown> = { ...conf.ipam };
  ipam.type ??= "host-local";
  // host-local: one range set per family, each the node's subnet (the gateway takes its first address).
  ipam.ranges = env.families.map((f) => [{ subnet: networkOf(f.subnet) }]);
  // The route to the pod network names its gateway (host-local's default, network + 1), where
  // flannel's plugin leaves it out: the kernel route is the same, and the bridge plugin's CHECK
  // before v1.3.0 (Debian's is 1.1.1) fails on routes without one (containernetworking/plugins#886).
  ipam.routes = [
    ...((conf.ipam?.routes as unknown[] | undefined) ?? []),
    ...env.families.flatMap((f) => f.network.map((n) => ({ dst: networkOf(n), gw: firstHostOf(f.subnet) }))),
  ];
  d.ipam = ipam;
  return d;
}

export interface PluginCall {
  args: CniArgs;
  stdin: string;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * The interface name ADD was given, kept beside the delegate config (and never passed to it): GC
 * runs DEL without the runtime, and host-local releases an address only for the right one.
 */
const KEPT_IFNAME = "weft.ifName";

function need(v: string | undefined, name: string, why: string): string {
  if (!v) throw new CniError(CNI_ERROR.INVALID_ENV, `${name} is not set: ${why}`);
  return v;
}

function needPath(args: CniArgs): string[] {
  if (args.path.length === 0)
    throw new CniError(CNI_ERROR.INVALID_ENV, "CNI_PATH is not set: the runtime must say where the plugins are");
  return args.path;
}

/** Kubernetes' interface name, and flannel's plugin's usual one. */
const DEFAULT_IFNAME = "eth0";

/**
 * The kept config's path for the attachment (container, interface): flannel's `<id>` for eth0, so
 * that a switch between flannel's plugin and weft's keeps finding the pods' files; `<id>@<ifname>`
 * for any other (a second network of the same container, with Multus), '@' being no container id's.
 */
function keptFile(dataDir: string, cid: string, ifName: string): string {
  return join(dataDir, ifName === DEFAULT_IFNAME ? cid : `${cid}@${ifName}`);
}

/** Linux's rule for an interface name (IFNAMSIZ, dev_valid_name), as libcni checks it; it also names a file here. */
const IFNAME = /^(?!\.\.?$)[^/:\s]+$/;

/** The attachment of an ADD, DEL or CHECK, once the CNI_* variables they need are checked. */
function attachmentOf(args: CniArgs): { cid: string; ifName: string } {
  const cid = need(args.containerId, "CNI_CONTAINERID", "the runtime must name the container");
  // The id names a file in dataDir: only the characters the spec allows, never a path.
  if (!CONTAINER_ID.test(cid))
    throw new CniError(
      CNI_ERROR.INVALID_ENV,
      `CNI_CONTAINERID "${cid}" may only hold letters, digits, '_', '.' and '-'`,
    );
  const ifName = need(args.ifName, "CNI_IFNAME", "the runtime must name the pod's interface");
  if (!IFNAME.test(ifName) || Buffer.byteLength(ifName) > 15)
    throw new CniError(
      CNI_ERROR.INVALID_ENV,
      `CNI_IFNAME "${ifName}" is not an interface name: 1 to 15 bytes, none of '/', ':' or spaces`,
    );
  needPath(args);
  return { cid, ifName };
}

/**
 * The kept config of a DEL or CHECK's attachment, if any: its own file; but an older weft kept
 * every interface in `<id>`, which is then the attachment's whose interface name it holds, and
 * flannel's plugin (as a weft before weft.ifName) one `<id>` per container whatever its interface,
 * with no name: that one is any interface's of the container.
 */
async function keptPath(args: CniArgs, dataDir: string): Promise<string | undefined> {
  const { cid, ifName } = attachmentOf(args);
  const own = keptFile(dataDir, cid, ifName);
  const old = join(dataDir, cid);
  if (
    own !== old &&
    (await access(own).then(
      () => true,
      () => false,
    ))
  )
    return own;
  // A damaged `<id>` counts as eth0's, for DEL to report and remove.
  const found = await readKept(old).catch(() => undefined);
  if (found) return found.ifName === undefined || found.ifName === ifName ? old : undefined;
  return own === old ? own : undefined;
}

/** STATUS and GC came with CNI 1.1.0; for an older config they are the spec's incompatible version (1), as skel answers. */
function need110(cniVersion: string | undefined, command: string): void {
  if (!versionAtLeast(cniVersion, "1.1.0"))
    throw new CniError(
      CNI_ERROR.INCOMPATIBLE_VERSION,
      `cniVersion ${cniVersion || DEFAULT_VERSION} does not have ${command}: it came with 1.1.0`,
    );
}

/**
 * The version to run the delegate with: the config's; but for a 1.1.0 config, 1.0.0 when the
 * delegate stops there (Debian's plugins, 1.1.1). The two share the result format (1.1.0 added
 * optional fields only, and STATUS and GC, which such a delegate does not have), so ADD works and
 * its result is a 1.1.0 one.
 */
async function delegateVersion(type: string, cniVersion: unknown, path: string[]): Promise<unknown> {
  if (cniVersion !== "1.1.0") return cniVersion;
  const r = (await runDelegate(type, { cniVersion }, { command: "VERSION", path })) as
    | { supportedVersions?: unknown }
    | undefined;
  const supported = Array.isArray(r?.supportedVersions) ? (r.supportedVersions as unknown[]) : [];
  return supported.includes("1.1.0") || !supported.includes("1.0.0") ? "1.1.0" : "1.0.0";
}

/** A 1.1.0 result (prevResult) as the delegate run at 1.0.0 knows it: the same but for its label. */
function resultFor(result: Record<string, unknown>, delegateVersion: unknown): Record<string, unknown> {
  return result.cniVersion === "1.1.0" && delegateVersion === "1.0.0" ? { ...result, cniVersion: "1.0.0" } : result;
}

/** Runs one CNI command; resolves with what to print on stdout (undefined: print nothing). */
export async function runPlugin(call: PluginCall): Promise<object | undefined> {
  const { args } = call;
  switch (args.command) {
    case "VERSION":
      return versionResult(call.stdin);
    case "DEL": {
      // As flannel's cmdDel: only what finds the kept config is read, so an edit of the conflist
      // since ADD (a bad delegate key, another version) never keeps a pod Terminating.
      const conf = parseDelConf(call.stdin);
      const { cid, ifName } = attachmentOf(args);
      // An ADD of the attachment that is still running would take its address after this DEL
      // removed the kept config, which nothing could then free; a GC deleting it is done soon.
      const lock = await bindAbstractWithin(attachmentLock(conf.dataDir, cid, ifName), DEL_LOCK_WAIT_MS).catch(
        (e: unknown) => lockFailure(e, `container ${cid}'s ${ifName}`),
      );
      if (!lock)
        throw new CniError(
          CNI_ERROR.TRY_AGAIN_LATER,
          `an ADD (or a GC) of container ${cid}'s ${ifName} on this dataDir still ran after ${DEL_LOCK_WAIT_MS / 1000} s: a runtime must not run DEL with ADD`,
          "the runtime retries the DEL; if it keeps failing, look for a plugin that hangs",
        );
      try {
        const kept = await keptPath(args, conf.dataDir);
        if (kept) await deleteKept(kept, args, conf.dataDir, [lock], conf.prevResult);
      } finally {
        lock.close();
      }
      return undefined;
    }
    case "STATUS":
      return await status(call);
    case "GC":
      return await gc(call);
  }
  const conf = parseNetConf(call.stdin);
  switch (args.command) {
    case "ADD": {
      const { cid, ifName } = attachmentOf(args);
      need(args.netns, "CNI_NETNS", "ADD needs the pod's network namespace");
      // Held while this ADD runs: a GC meanwhile (whose list cannot name the pod yet) leaves the
      // attachment alone, a DEL waits for it (see attachmentLock).
      const running = await bindAbstract(attachmentLock(conf.dataDir, cid, ifName)).catch((e: unknown) =>
        lockFailure(e, `container ${cid}'s ${ifName}`),
      );
      if (!running)
        throw new CniError(
          CNI_ERROR.TRY_AGAIN_LATER,
          `another ADD, a DEL or a GC of container ${cid}'s ${ifName} on this dataDir is running: a runtime must not run two operations on one container at once`,
        );
      try {
        return await add(conf, args, keptFile(conf.dataDir, cid, ifName), running);
      } finally {
        running.close();
      }
    }
    case "CHECK": {
      if (!versionAtLeast(conf.cniVersion, "0.4.0"))
        throw new CniError(CNI_ERROR.INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later");
      need(args.netns, "CNI_NETNS", "CHECK needs the pod's network namespace");
      if (!conf.prevResult) throw new CniError(CNI_ERROR.INVALID_CONFIG, "CHECK needs prevResult: the result of ADD");
      const kept = await keptPath(args, conf.dataDir);
      const found = kept && (await readKept(kept));
      if (!found)
        throw new CniError(
          CNI_ERROR.UNKNOWN_CONTAINER,
          `no pod ${args.containerId} was added on this network (nothing kept in ${conf.dataDir})`,
        );
      checkAddressesInSubnet(conf.prevResult, await readSubnetEnv(conf.subnetFile), conf.subnetFile);
      const { d } = found;
      const v = await delegateVersion(d.type as string, conf.cniVersion, args.path);
      await runDelegate(d.type as string, { ...d, cniVersion: v, prevResult: resultFor(conf.prevResult, v) }, args);
      return undefined;
    }
  }
}

/**
 * The abstract socket an ADD, a DEL or a GC of the attachment holds while it runs, named after its
 * kept file (dataDir, container, interface; a runtime attaching a sandbox's networks in parallel,
 * as containerd's go-cni does, gives each its own interface, so its own file and lock). Spec 1.1
 * has the runtime never run GC while an ADD or DEL runs (CRI-O's ocicni holds a lock for it), and
 * the reference plugins count on that; a runtime that overlaps them lists no pod whose ADD is not
 * done, and GC would free the address, rules and kept config of a pod being built (its later DEL
 * finding nothing). Not a lock file: the kernel frees the name however the holder ends, and the
 * plugin has no flock (Node.js has none). The delegate run under it inherits it (see runDelegate): a
 * runtime that kills an ADD taking too long kills this process only, and the delegate's ADD it
 * started goes on (for DELEGATE_TIMEOUT_MS at most); the runtime's DEL then waits for it.
 */
function attachmentLock(dataDir: string, cid: string, ifName: string): string {
  return `\0weft-cni:${createHash("sha256")
    .update(keptFile(resolve(dataDir), cid, ifName))
    .digest("hex")}`;
}

/**
 * How long a DEL waits for an ADD or GC of its attachment: far longer than an ADD takes, well within
 * the runtimes' request timeouts (kubelet's is 2 min), after which it fails with 11 (the runtime
 * retries a failed DEL) rather than remove the config of an ADD that would then leak its address.
 */
const DEL_LOCK_WAIT_MS = 10_000;

/**
 * Runs the delegate, bounded (DELEGATE_TIMEOUT_MS, by the host's timeout: see execPlugin), under
 * these `locks`: it inherits their sockets, so that they stay bound while it runs even once this
 * process is gone (killed by a runtime's timeout), and no longer than that bound.
 */
function runDelegate(type: string, conf: object, args: CniArgs, locks: Server[] = []): Promise<unknown> {
  return execPlugin(type, conf, args, {
    fds: locks.flatMap((l) => descriptorOf(l) ?? []),
    timeoutMs: DELEGATE_TIMEOUT_MS,
  });
}

/** A lock (of `of`) that cannot be bound for another reason than a holder (EMFILE, an LSM's EACCES). */
function lockFailure(e: unknown, of: string): never {
  throw new CniError(
    CNI_ERROR.IO_FAILURE,
    // The name's NUL shown as '@', as /proc/net/unix shows it.
    `cannot bind the lock of ${of} (an abstract unix socket): ${errorMessage(e).replaceAll("\0", "@")}`,
    "check the plugin's open files limit and whether a security module denies it unix sockets",
  );
}

/** The abstract socket name of networkGcLock (leading NUL). */
export function networkGcLockName(dataDir: string, network: string): string {
  return `\0weft-cni-gc:${createHash("sha256")
    .update(`${resolve(dataDir)}\0${network}`)
    .digest("hex")}`;
}

/**
 * The abstract socket a GC of the network holds from its last listing of dataDir to its
 * delegate's GC's end, which an ADD on the network binds (and lets go at once) after writing its
 * kept file, before its delegate runs: bound then, either that GC's listing comes after and sees
 * the file (spared), or that GC has ended; never its delegate's ADD during the delegate's GC,
 * unspared (its address freed). A GC without a delegate's GC never takes it.
 */
async function networkGcLock(dataDir: string, network: string): Promise<Server> {
  const name = networkGcLockName(dataDir, network);
  const of = `network ${network}'s GC on ${dataDir}`;
  const lock = await bindAbstractWithin(name, DEL_LOCK_WAIT_MS).catch((e: unknown) => lockFailure(e, of));
  if (!lock)
    throw new CniError(
      CNI_ERROR.TRY_AGAIN_LATER,
      // The name as ss and /proc/net/unix show it: its NUL as '@'.
      `the lock of ${of} was held for over ${DEL_LOCK_WAIT_MS / 1000} s by a delegate's GC running (its process group sent SIGTERM after ${DELEGATE_TIMEOUT_MS / 1000} s, SIGKILL ${KILL_AFTER_MS / 1000} s later) or a process it left with the socket: find it by the socket, \`ss -xlp | grep ${name.replace("\0", "@")}\``,
      "the runtime retries; if it keeps failing, end the process holding the socket",
    );
  return lock;
}

/**
 * How long a delegate's ADD, DEL, CHECK, GC, STATUS or VERSION may run (and keep its locks): far
 * longer than the reference plugins take, within kubelet's 2 min request timeout; then its process
 * group gets SIGTERM, SIGKILL 5 s later, a child it left holding a lock with it. A runtime
 * SIGKILLs only this process on its own timeout (libcni), so the delegate's ADD goes on, bounded,
 * and the runtime's DEL waits for it; a delegate killed mid-ADD or mid-DEL leaves what a crash
 * would, which the DEL that follows (its own retries) removes, as the spec has DEL do.
 */
const DELEGATE_TIMEOUT_MS = 60_000;

/**
 * The locks of these interfaces of the container, for GC; undefined (none kept) when another
 * process holds one.
 */
async function lockAll(dataDir: string, cid: string, ifNames: string[]): Promise<Server[] | undefined> {
  const wanted = new Set(ifNames);
  const mine: Server[] = [];
  try {
    for (const ifName of wanted) {
      const lock = await bindAbstract(attachmentLock(dataDir, cid, ifName)).catch((e: unknown) =>
        lockFailure(e, `container ${cid}'s ${ifName}`),
      );
      if (!lock) break;
      mine.push(lock);
    }
  } catch (e) {
    for (const lock of mine) lock.close();
    throw e;
  }
  if (mine.length === wanted.size) return mine;
  for (const lock of mine) lock.close();
  return undefined;
}

/**
 * How long GC leaves a kept file after the ADD that wrote it ended: a runtime's list taken just
 * before that ADD's end cannot name the pod, which the spec has the runtime prevent, and which
 * costs the pod its address; a gone pod's resources wait that much longer.
 */
const GC_GRACE_MS = 60_000;

/**
 * How many attachments one GC deletes at most, holding a lock (a descriptor) for each until its
 * rules are removed: the rest wait for the next GC.
 */
const GC_MAX_ATTACHMENTS = 256;

/** Whether the kept file was written (by an ADD) within GC_GRACE_MS. */
async function fresh(file: string): Promise<boolean> {
  const { mtimeMs } = await stat(file);
  return Date.now() - mtimeMs < GC_GRACE_MS;
}

/** ADD, the attachment's `lock` held: the delegate config kept in `kept`, then run. */
async function add(conf: FlannelNetConf, args: CniArgs, kept: string, lock: Server): Promise<object> {
  const env = await readSubnetEnv(conf.subnetFile);
  const d = delegateConfig(conf, env);
  const type = d.type as string;
  const asked = d.cniVersion;
  const v = await delegateVersion(type, asked, args.path);
  if (v !== asked) d.cniVersion = v;
  const modes = { mode: 0o600, dirMode: 0o700 };
  // What a re-ADD of a live attachment replaces: put back should this ADD not reach its delegate.
  // Its times too: put back with a fresh mtime, a gone pod's file would be spared by GC longer.
  const before = await Promise.all([readFile(kept), stat(kept)]).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw new CniError(CNI_ERROR.IO_FAILURE, `cannot read ${kept}: ${e.message}`);
  });
  // Kept before the delegate runs, so that a DEL after a failed or interrupted ADD still finds it.
  await writeFileAtomic(kept, JSON.stringify({ ...d, [KEPT_IFNAME]: args.ifName }), modes);
  // Not during a delegate's GC listed before that write (see networkGcLock); bound only for a
  // moment, so ADDs on the network never wait for each other's writes.
  try {
    (await networkGcLock(conf.dataDir, conf.name)).close();
  } catch (error) {
    // No delegate ran: a new file would name nothing, and a live attachment's DEL needs its own config.
    await (before === undefined
      ? rm(kept, { force: true })
      : writeFileAtomic(kept, before[0], modes).then(() =>
          utimes(kept, before[1].atime, before[1].mtime).catch(() => undefined),
        )
    ).catch((e: unknown) =>
      warn(`${kept} is left as this failed ADD wrote it (${errorMessage(e)}): a DEL runs its config`),
    );
    throw error;
  }
  try {
    const result = (await runDelegate(type, d, args, [lock])) as Record<string, unknown>;
    // The file's time is the ADD's end: GC leaves it for GC_GRACE_MS (see there). Failing, it
    // keeps the ADD's start, a shorter grace, which fails no ADD that worked.
    const now = new Date();
    await utimes(kept, now, now).catch(() => undefined);
    return v === asked ? result : { ...result, cniVersion: asked };
  } catch (error) {
    // The reference plugins release what they took when ADD fails; a DEL makes sure. Only
    // when it worked (or the delegate refused the version, so did nothing) is nothing left;
    // else the kept config stays, for the runtime's own DEL to try again.
    const refused = error instanceof CniError && error.cniCode === CNI_ERROR.INCOMPATIBLE_VERSION;
    const released =
      refused ||
      (await runDelegate(type, d, { ...args, command: "DEL" }, [lock]).then(
        () => true,
        () => false,
      ));
    if (released) await rm(kept, { force: true });
    throw error;
  }
}

/**
 * The kept file of a DEL or GC, or undefined when there is none; a damaged one is removed, as
 * flannel's plugin does: a DEL failing forever leaves the pod Terminating, and nothing could
 * ever run its delegate. Said on stderr, which runtimes log.
 */
async function readKeptOrDrop(path: string): Promise<Kept | undefined> {
  return await readKept(path).catch(async (e: unknown) => {
    damagedAsNone(e);
    warn(`${errorMessage(e)}; removed it: the pod's interface and address, if any, are left to remove by hand`);
    await rm(path, { force: true });
    return undefined;
  });
}

function warn(text: string): void {
  process.stderr.write(`weft cni: ${text}\n`);
}

/**
 * The delegate's DEL of a kept config (one per call: GC may not know which interface), under the
 * attachment's `locks`, with the runtime's prevResult if of its version.
 */
async function delegateDel(
  d: Record<string, unknown>,
  calls: CniArgs[],
  locks: Server[],
  prevResult?: Record<string, unknown>,
): Promise<void> {
  // A result of another version than the kept config's (the conflist's cniVersion changed since
  // ADD; libcni converts the cached result to the new one) is one the delegate cannot parse: ipvlan's
  // DEL would fail forever. Without it DEL works from the config alone, as under flannel's plugin.
  const prev = prevResult && resultFor(prevResult, d.cniVersion);
  const conf = prev?.cniVersion === d.cniVersion ? { ...d, prevResult: prev } : d;
  for (const args of calls) await runDelegate(d.type as string, conf, args, locks);
}

/**
 * The runtime's DEL of what ADD kept in `path`; the file goes once the delegate's DEL worked (and
 * the masquerade removal, see below). Nothing kept (never added, or already deleted) succeeds, as
 * the spec asks.
 */
async function deleteKept(
  path: string,
  args: CniArgs,
  dataDir: string,
  locks: Server[],
  prevResult?: Record<string, unknown>,
): Promise<void> {
  const found = await readKeptOrDrop(path);
  if (!found) return;
  const { cid, ifName } = attachmentOf(args);
  // What an earlier DEL or GC left names its interfaces (a file without one may have been GC'd for net1).
  const ifNames = found.left?.ifNames ?? [ifName];
  const masq = bridgeMasquerade(found.d, cid, ifNames);
  const shared = masq !== undefined && (await sharesChain(path, cid, found.d.name, dataDir));
  // The bridge's DEL removes its masquerade rules only for the addresses it finds on the pod's
  // interface: none without the namespace, nor once the interface is gone (deleted by something
  // else: bridge 1.1.1 then frees the address and succeeds before its teardown). So the families
  // it will find no address of are read before it, and their rules go after it (the address is
  // freed whatever iptables does); none in the usual DEL, which so lists no nat table (big with
  // kube-proxy's, whose xtables lock may be held for long). A file GC or an earlier DEL left
  // (`left`) needs only that removal.
  let left = found.left;
  let families = masq?.families;
  if (!left) {
    // host-local's store names the interface's addresses only until the delegate's DEL frees them.
    const sources = shared ? await sourcesOf(found.d, cid, [ifName], new Map()) : undefined;
    if (masq) families = await familiesBridgeLeaves(masq, args.netns, ifName);
    try {
      await delegateDel(found.d, [args], locks, prevResult);
      if (masq && families?.length) left = { sources, ifNames };
    } catch (e) {
      // With the namespace, the bridge's own teardown cannot delete the chain ("Too many links")
      // while a jump of a gone interface whose addresses were unknown still leads to it; its next
      // DEL would then leave it for good. As the container's last attachment on the network, all
      // of its rules go, and its DEL runs again.
      if (!masq || shared || (await netnsGone(args.netns))) throw e;
      const failed = (await removeMasquerades([masq])).get(masq);
      if (failed) {
        // The bridge stops at its first failure (interface, address — the other way before 1.1.1 —
        // then rules): only a DEL of its that now succeeds (no interface: no teardown) shows that
        // the rules alone are left. Without the mark, that next DEL would forget them.
        await delegateDel(found.d, [args], locks, prevResult).catch((again: unknown) => {
          throw new CniError(
            asCniError(e).cniCode,
            `${asCniError(e).message}; ${failed.message}; again: ${errorMessage(again)}`,
            failed.details,
          );
        });
        return await leaveMasquerade(path, found, { ifNames }, failed);
      }
      await delegateDel(found.d, [args], locks, prevResult);
    }
  }
  if (left && masq && families) {
    const target = { ...leftTarget(masq, left, shared, ifNames), families };
    const failed = (await removeMasquerades([target])).get(target);
    if (failed) return await leaveMasquerade(path, found, left, failed);
  }
  await rm(path, { force: true });
}

/**
 * A DEL whose pod is gone (address freed, interface deleted) but whose masquerade rules could not
 * be removed keeps what is left in its file, which the next DEL or GC retries alone, and fails: the
 * runtime's retry of a failed DEL is the one retry every runtime makes (containerd runs no CNI
 * GC), and a DEL that succeeded is never sent again. A family without a nat table counts as
 * nothing to remove, so what fails is passing (a held xtables lock) or needs a hand anyway.
 */
async function leaveMasquerade(path: string, found: Kept, left: Left, failed: CniError): Promise<never> {
  await keepLeft(path, found, left);
  throw failed;
}

/** STATUS (1.1.0): ready when subnet.env is (the agent holds a lease) and the delegate says so too. */
async function status(call: PluginCall): Promise<undefined> {
  const conf = parseNetConf(call.stdin);
  need110(conf.cniVersion, "STATUS");
  const notAvailable = (e: unknown): never => {
    const c = asCniError(e);
    throw new CniError(CNI_ERROR.NOT_AVAILABLE, c.message, c.details);
  };
  const d = delegateConfig(conf, await readSubnetEnv(conf.subnetFile).catch(notAvailable));
  const type = d.type as string;
  // A delegate run at 1.0.0 has no STATUS to ask: ADD works as far as it can tell.
  if ((await delegateVersion(type, d.cniVersion, call.args.path).catch(notAvailable)) === "1.1.0")
    await runDelegate(type, d, { command: "STATUS", path: call.args.path });
  return undefined;
}

interface KeptAttachment {
  cid: string;
  file: string;
  /** The interface the file's name says (eth0 for `<id>`). */
  fileIf: string;
  found: Kept;
  stays: boolean;
}

/** The names in dataDir, none when it does not exist. */
async function listKept(dataDir: string): Promise<string[]> {
  return await readdir(dataDir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return [];
    throw new CniError(CNI_ERROR.IO_FAILURE, `cannot list ${dataDir}: ${e.message}`);
  });
}

/** A damaged kept file is no one's known; any other failure to read it is one. */
function damagedAsNone(e: unknown): undefined {
  if (e instanceof CniError && e.cniCode === CNI_ERROR.DECODE_FAILURE) return undefined;
  throw e;
}

/**
 * The attachments of the GC's network kept in dataDir under `names`, but for containers the
 * runtime lists whole (`valid`), each with whether the runtime's list keeps it (`stays`);
 * `unreadable` answers for a file that cannot be read (none, or a failure).
 */
async function keptOfNetwork(
  conf: { dataDir: string; name: string },
  names: string[],
  valid: Set<string>,
  listed: Set<string>,
  unreadable: (e: unknown) => undefined,
): Promise<KeptAttachment[]> {
  const ours: KeptAttachment[] = [];
  for (const name of names) {
    // Dot-files are the atomic writer's temporary files; anything else is no container's.
    const [cid, fileIf = DEFAULT_IFNAME] = name.split("@");
    if (!CONTAINER_ID.test(cid) || valid.has(cid)) continue;
    // Only this network's: the default dataDir is shared by every network of this type (and
    // flannel's plugin), whose pods this runtime's list does not name; libcni's GC, too, keeps to
    // its own network. A damaged file is no one's known: DEL removes it, GC leaves it.
    const file = join(conf.dataDir, name);
    const found = await readKept(file).catch(unreadable);
    if (found?.d.name !== conf.name) continue;
    // A file without an interface name is any interface's: kept while the container is listed.
    const stays = found.ifName === undefined ? listed.has(cid) : valid.has(`${cid}@${found.ifName}`);
    ours.push({ cid, file, fileIf, found, stays });
  }
  return ours;
}

/**
 * GC (1.1.0): every attachment kept in dataDir that the runtime no longer lists gets its delegate's
 * DEL (no CNI_NETNS: the spec lets GC assume the pod's namespace is gone), then GC goes on to the
 * delegate if it has it. As the spec asks, a failure stops nothing; the errors are reported after.
 */
async function gc(call: PluginCall): Promise<undefined> {
  const conf = parseGcConf(call.stdin);
  need110(conf.cniVersion, "GC");
  const path = needPath(call.args);
  const attachments = conf["cni.dev/valid-attachments"];
  // An attachment is (container, interface), as the spec has it; an entry without ifname keeps
  // every interface of its container.
  const valid = new Set(
    attachments.map((a) => (a.ifname === undefined ? a.containerID : `${a.containerID}@${a.ifname}`)),
  );
  const listed = new Set(attachments.map((a) => a.containerID));
  const failures: CniError[] = [];
  const names = await listKept(conf.dataDir);
  const ours = await keptOfNetwork(conf, names, valid, listed, () => undefined);
  const stores = new Map<string, Promise<HostLocalEntry[] | undefined>>();
  // The masquerade rules of every gone attachment go after all the delegates' DELs, in one
  // iptables transaction per family: freeing the addresses never waits for (or on) iptables.
  const removals: Array<{ file: string; found: Kept; left: Left; target: Masquerade }> = [];
  // The locks of the attachments deleted, held until their rules are removed too: an ADD of one
  // meanwhile (a runtime's re-ADD after its list) is refused (11) rather than freed by this GC.
  const locks: Server[] = [];
  try {
    // First the attachments to delete, each locked; a container with another attachment kept on
    // the network (the runtime lists one, whatever its kept file holds, or one is skipped here)
    // keeps its chain.
    const going: Array<{ cid: string; file: string; found: Kept; ifNames: string[]; locks: Server[] }> = [];
    const keeps = new Set(listed);
    let later = 0;
    for (const { cid, file, fileIf, found: listedFound } of ours.filter((o) => !o.stays)) {
      // Each lock is a descriptor, held to the end: a GC of a great many leaves the rest to the next.
      if (going.length >= GC_MAX_ATTACHMENTS) {
        later++;
        keeps.add(cid);
        continue;
      }
      let mine: Server[] | undefined;
      try {
        // The interfaces DEL'd: the file's, or those host-local holds addresses of (see unkeptIfNames).
        const ifNamesOf = async (k: Kept) =>
          k.ifName !== undefined ? [k.ifName] : unkeptIfNames(cid, names, await hostLocalStore(k.d, stores));
        mine = await lockAll(conf.dataDir, cid, [fileIf, ...(await ifNamesOf(listedFound))]);
        if (!mine) {
          warn(
            `GC: an ADD, DEL or GC of container ${cid} is running, so ${file} is left for a later GC: a runtime must not run GC with ADD or DEL`,
          );
          keeps.add(cid);
          continue;
        }
        // Read again under the lock: a DEL or an ADD may have run since the listing. Damaged since,
        // it is no one's known, as there; a read that fails (EMFILE) is a failure, never a skip.
        const found = await readKept(file).catch(damagedAsNone);
        if (found?.d.name !== conf.name) continue;
        if (!found.left && (await fresh(file))) {
          warn(
            `GC: ${file} was kept by an ADD less than ${GC_GRACE_MS / 1000} s ago, which a runtime's list taken before it cannot name: left for a later GC`,
          );
          keeps.add(cid);
          continue;
        }
        going.push({
          cid,
          file,
          found,
          ifNames: found.left ? (found.left.ifNames ?? [found.ifName ?? DEFAULT_IFNAME]) : await ifNamesOf(found),
          locks: mine,
        });
        locks.push(...mine);
        mine = undefined;
      } catch (e) {
        // Not deleted (its lock could not be bound): as one left, it keeps the chain.
        keeps.add(cid);
        failures.push(asCniError(e));
      } finally {
        // A lock of an attachment left goes at once: an ADD or DEL of it may run meanwhile.
        for (const lock of mine ?? []) lock.close();
      }
    }
    if (later > 0)
      warn(
        `GC: ${later} more kept files of gone attachments are left for the next GC: one GC deletes at most ${GC_MAX_ATTACHMENTS}, holding a lock (a descriptor) for each`,
      );
    // An ADD of another interface that began after the listing kept its file before its delegate ran.
    // A listing that fails fails the GC, before any DEL: a missed one would lose that interface its chain.
    for (const name of await listKept(conf.dataDir)) {
      const [cid] = name.split("@");
      if (names.includes(name) || !CONTAINER_ID.test(cid)) continue;
      keeps.add(cid);
    }
    for (const { cid, file, found, ifNames, locks: held } of going) {
      try {
        const masq = bridgeMasquerade(found.d, cid, ifNames);
        // The chain is the container's on this network, whichever interface: while another of its
        // attachments stays, only the jumps from these interfaces' addresses go, read before the
        // delegate frees them.
        const shared = keeps.has(cid);
        let left = found.left;
        if (!left) {
          if (masq) left = { sources: shared ? await sourcesOf(found.d, cid, ifNames, stores) : undefined, ifNames };
          const calls = ifNames.map((ifName): CniArgs => ({ command: "DEL", containerId: cid, ifName, path }));
          await delegateDel(found.d, calls, held);
        }
        if (!masq || !left) {
          await rm(file, { force: true });
          continue;
        }
        // (Shared, the file names its interface: one without is kept while the container is listed.)
        const target = leftTarget(masq, left, shared, ifNames);
        removals.push({ file, found, left, target });
      } catch (e) {
        // The file stays: the next GC tries again.
        failures.push(asCniError(e));
      }
    }
    const failed = await removeMasquerades(removals.map((r) => r.target));
    for (const { file, found, left, target } of removals) {
      const failure = failed.get(target);
      try {
        // What could not be removed is kept (the address is free), for the next GC.
        if (failure) await keepLeft(file, found, left);
        else await rm(file, { force: true });
      } catch (e) {
        failures.push(asCniError(e));
      }
      if (failure) failures.push(failure);
    }
  } finally {
    for (const lock of locks) lock.close();
  }
  try {
    const full = parseNetConf(call.stdin);
    const d = delegateConfig(full, await readSubnetEnv(full.subnetFile));
    const type = d.type as string;
    if ((await delegateVersion(type, d.cniVersion, path)) === "1.1.0") {
      // The delegate's GC would free what this network's kept files not in the runtime's list still
      // hold: those this GC left (running, fresh, past its cap, failed) and those an ADD kept since
      // the listing (during the DELs above, or after their locks went). Read under the network's
      // lock, held until that GC ends (its delegate inherits it), which an ADD binds after keeping
      // its file (see networkGcLock); unlike the first listing, an entry that cannot be read fails
      // this GC: one missed is not spared.
      const lock = await networkGcLock(conf.dataDir, conf.name);
      try {
        const kept = await keptOfNetwork(conf, await listKept(conf.dataDir), valid, listed, damagedAsNone);
        const spared = kept
          .filter((k) => !k.stays)
          .map(({ cid, found }) =>
            found.ifName === undefined ? { containerID: cid } : { containerID: cid, ifname: found.ifName },
          );
        await runDelegate(
          type,
          { ...d, "cni.dev/valid-attachments": [...attachments, ...spared] },
          { command: "GC", path },
          [lock],
        );
      } finally {
        lock.close();
      }
    }
  } catch (e) {
    failures.push(asCniError(e));
  }
  if (failures.length > 0)
    throw new CniError(failures[0].cniCode, `GC: ${failures.map((f) => f.message).join("; ")}`, failures[0].details);
  return undefined;
}

function versionResult(stdin: string): object {
  let asked: unknown;
  try {
    asked = stdin.trim() ? (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion : undefined;
  } catch {
    asked = undefined;
  }
  const cniVersion =
    typeof asked === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(asked)
      ? asked
      : SUPPORTED_VERSIONS.at(-1)!;
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}

async function readSubnetEnv(path: string): Promise<SubnetEnv> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      // Transient by nature: the agent writes it once it holds a lease. The runtime retries.
      throw new CniError(
        CNI_ERROR.TRY_AGAIN_LATER,
        `subnet file ${path} does not exist yet: the weft (or flannel) agent on this node has not leased a subnet`,
        "the agent writes it once it is ready (/readyz); check that it runs",
      );
    }
    throw new CniError(
      CNI_ERROR.IO_FAILURE,
      `cannot read subnet file ${path}: ${(e as Error).message}`,
      `subnetFile in the network config (the conflist) is ${path}: it must name the file the agent writes, its --subnet-file (default ${DEFAULT_SUBNET_FILE})`,
    );
  }
  return parseSubnetEnvFile(text, path);
}

interface Kept {
  d: Record<string, unknown>;
  /** Unknown for flannel's plugin's files and an older weft's. */
  ifName?: string;
  /** Set once the delegate's DEL ran but the bridge's masquerade rules could not be removed. */
  left?: Left;
}

/**
 * What a DEL or GC left to remove: the bridge's masquerade rules of the attachment, its delegate's
 * DEL done; with `sources`, only the jumps from these addresses (another attachment of the
 * container shared the chain then).
 */
interface Left {
  sources?: string[];
  /**
   * The interfaces DEL'd, whose nftables rules these are: a file without an interface name
   * (flannel's) may have been GC'd for net1. Unknown in an older weft's: the file's, or eth0.
   */
  ifNames?: string[];
}

/** The key of a kept file holding `Left`. */
const KEPT_LEFT = "weft.masqueradeLeft";

function leftOf(kept: { sources?: unknown; ifNames?: unknown }): Left {
  const strings = (v: unknown) => (Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : undefined);
  const ifNames = strings(kept.ifNames);
  return { sources: strings(kept.sources), ifNames: ifNames?.length ? ifNames : undefined };
}

/** host-local's store when the config does not name one. */
const HOST_LOCAL_DIR = "/var/lib/cni/networks";

/** An address host-local holds: its `<ip>` file, holding "<id>\r\n<ifname>". */
interface HostLocalEntry {
  ip: string;
  id: string;
  ifName: string;
}

/**
 * host-local's store of a kept config (undefined for another IPAM, or unreadable), read once per
 * GC: a container's DEL releases only its own entries, which no other file's look needs.
 */
async function hostLocalStore(
  d: Record<string, unknown>,
  stores: Map<string, Promise<HostLocalEntry[] | undefined>>,
): Promise<HostLocalEntry[] | undefined> {
  const ipam = d.ipam as { type?: unknown; dataDir?: unknown } | undefined;
  if (ipam?.type !== "host-local" || typeof d.name !== "string") return undefined;
  const dir = join(typeof ipam.dataDir === "string" ? ipam.dataDir : HOST_LOCAL_DIR, d.name);
  if (!stores.has(dir))
    stores.set(
      dir,
      readdir(dir)
        .catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? [] : undefined))
        .then(
          (files) =>
            files &&
            Promise.all(
              files.map(async (ip) => {
                const [id = "", ifName = ""] = (await readFile(join(dir, ip), "utf8").catch(() => ""))
                  .trim()
                  .split("\r\n");
                return { ip, id, ifName };
              }),
            ),
        ),
    );
  return stores.get(dir);
}

/**
 * The interfaces to DEL, at GC, for a container's file without an interface name (flannel's):
 * host-local's DEL releases only the addresses of the (container, interface) it names, or, when
 * there are none, those an older host-local stored under the container alone; so the interfaces it
 * holds addresses for (but those with a kept file of their own) are read from its store; with none
 * found, or another IPAM, eth0, flannel's usual one.
 */
function unkeptIfNames(cid: string, names: string[], store: HostLocalEntry[] | undefined): string[] {
  const held = new Set(
    (store ?? []).filter((e) => e.id === cid && e.ifName && !names.includes(`${cid}@${e.ifName}`)).map((e) => e.ifName),
  );
  return held.size > 0 ? [...held] : [DEFAULT_IFNAME];
}

/**
 * CNI_NETNS unset, or a path that no longer exists (the runtime's DEL after a reboot, or once the
 * pod's sandbox died): the bridge's DEL then has no interface to learn the pod's addresses from.
 */
async function netnsGone(netns: string | undefined): Promise<boolean> {
  if (!netns) return true;
  return await access(netns).then(
    () => false,
    (e: NodeJS.ErrnoException) => e.code === "ENOENT",
  );
}

/**
 * The families of the masquerade whose rules the bridge's DEL will leave: those the pod's interface
 * has no global unicast address of (the bridge tears down the ones it finds there, in Go's sense),
 * all without the namespace or the interface, or when that cannot be read (nsenter missing).
 */
async function familiesBridgeLeaves(
  masq: Masquerade,
  netns: string | undefined,
  ifName: string,
): Promise<Array<4 | 6>> {
  if (await netnsGone(netns)) return masq.families;
  const there = await new Kernel().globalAddressFamilies(netns!, ifName).catch(() => [] as Array<4 | 6>);
  return masq.families.filter((f) => !there.includes(f));
}

/**
 * The addresses host-local holds for these interfaces of the container, read before the delegate's
 * DEL frees them; undefined when they cannot be known (another IPAM, an unreadable store).
 */
async function sourcesOf(
  d: Record<string, unknown>,
  cid: string,
  ifNames: string[],
  stores: Map<string, Promise<HostLocalEntry[] | undefined>>,
): Promise<string[] | undefined> {
  return (await hostLocalStore(d, stores))?.filter((e) => e.id === cid && ifNames.includes(e.ifName)).map((e) => e.ip);
}

/**
 * Whether another attachment of the container is kept on the network, so shares the bridge's
 * chain, at DEL (GC has the runtime's list instead). A damaged file may be one: its chain is kept
 * rather than a live interface's masquerading lost. A file whose DEL ran (`left`) is none.
 */
async function sharesChain(path: string, cid: string, network: unknown, dataDir: string): Promise<boolean> {
  for (const name of await listKept(dataDir)) {
    if ((name !== cid && !name.startsWith(`${cid}@`)) || join(dataDir, name) === path) continue;
    const other = await readKept(join(dataDir, name)).catch(() => "damaged" as const);
    if (other === "damaged" || (other && other.d.name === network && !other.left)) return true;
  }
  return false;
}

/** A shared chain whose jumps from a gone interface's addresses cannot be found: said, and left. */
function unknownSources(m: Masquerade, ifNames: string[]): string[] {
  warn(
    `cannot tell which of the POSTROUTING jumps to ${m.chain} (nat) are container ${m.cid}'s ${ifNames.join(", ")}, whose IPAM is not host-local or whose store cannot be read: they stay until the container's last attachment on the network is deleted, which removes them all`,
  );
  return [];
}

/**
 * The masquerade rules left of the interface's attachment: all of the container's on the network,
 * or, with the chain `shared` with another of its attachments, the jumps from its addresses.
 */
function leftTarget(masq: Masquerade, left: Left, shared: boolean, ifNames: string[]): Masquerade {
  return { ...masq, sources: shared ? (left.sources ?? unknownSources(masq, ifNames)) : undefined };
}

/** Keeps what is left to remove in the attachment's file, its delegate's DEL done. */
async function keepLeft(path: string, found: Kept, left: Left): Promise<void> {
  await writeFileAtomic(path, JSON.stringify({ ...found.d, [KEPT_IFNAME]: found.ifName, [KEPT_LEFT]: left }), {
    mode: 0o600,
    dirMode: 0o700,
  });
}

/**
 * The bridge plugin's ipMasq rules of a container's interfaces on a network (undefined when it
 * makes none: another plugin, or no ipMasq). Its DEL removes them only for the pod's interface
 * found with an address: a DEL without the namespace (GC's are) or the interface leaves them.
 * With iptables (`ipMasqBackend` unset or "iptables", and "nftables" too: a bridge before 1.6
 * ignores the key, and a pod added before an upgrade has such rules) the names are the reference
 * plugins' (pkg/utils): the chain `CNI-` and the first 24 hex digits of sha512(network name +
 * container id), jumped to from nat POSTROUTING by one rule per pod address (commented `name:
 * "<network>" id: "<container id>"`); the families are the kept config's host-local ranges'. With
 * nftables ("nftables", or unset where a bridge from 1.6 finds iptables unusable): rules of chain
 * masq_checks in table `inet cni_plugins_masquerade`, one per address, whose comment starts with
 * the interface's hash (pkg/ip's hashForInstance).
 */
interface Masquerade {
  chain: string;
  /** The comment prefixes of its nftables rules, one per interface; none with the iptables backend. */
  nft: string[];
  /**
   * Whether nftables is the backend asked for ("nftables"): unset, a bridge from 1.6 uses it only
   * where nft works, so an nft that cannot list (none, no JSON, no nf_tables) means no such rules.
   */
  nftAsked: boolean;
  cid: string;
  families: Array<4 | 6>;
  /** Only the jumps from these addresses, the chain kept: another attachment of the container still uses it. */
  sources?: string[];
}

/** The first `n` hex digits of sha512(text), as pkg/utils' hashes. */
function sha512Prefix(text: string, n: number): string {
  return createHash("sha512").update(text).digest("hex").slice(0, n);
}

function bridgeMasquerade(d: Record<string, unknown>, cid: string, ifNames: string[]): Masquerade | undefined {
  if (d.type !== "bridge" || d.ipMasq !== true || typeof d.name !== "string") return undefined;
  const network = d.name;
  const chain = `CNI-${sha512Prefix(network + cid, 24)}`;
  const nft =
    d.ipMasqBackend === "iptables"
      ? []
      : ifNames.map((i) => `${sha512Prefix(network, 16)}-${sha512Prefix(`${i}:${cid}`, 16)}`);
  const ranges = (d.ipam as { ranges?: unknown } | undefined)?.ranges;
  const subnets = (Array.isArray(ranges) ? (ranges.flat() as Array<{ subnet?: unknown } | undefined>) : [])
    .map((r) => r?.subnet)
    .filter((s): s is string => typeof s === "string");
  const families = ([4, 6] as const).filter((f) => subnets.some((s) => s.includes(":") === (f === 6)));
  return { chain, nft, nftAsked: d.ipMasqBackend === "nftables", cid, families };
}

/**
 * The lines of a nat table listing (`-S`) that remove a chain's rules, for Kernel.iptablesDelete:
 * every rule that jumps or goes to it, and the chain, flushed by its declaration, if it exists;
 * with `sources`, only the POSTROUTING jumps from those addresses. None when nothing is there.
 */
function masqueradeScript(rules: string[], chain: string, sources?: string[]): string[] {
  // The target comes last (a chain takes no options), so a comment naming the chain cannot match.
  const target = new RegExp(` -[jg] ${chain}$`);
  const refs = rules.filter((l) => l.startsWith("-A ") && !l.startsWith(`-A ${chain} `) && target.test(l));
  const deletes = sources
    ? refs.filter((l) => l.startsWith("-A POSTROUTING -s ") && sources.includes(l.split(" ")[3].split("/")[0]))
    : refs;
  if (sources || !rules.includes(`-N ${chain}`)) return deletes;
  return [`:${chain} - [0:0]`, ...deletes, `-X ${chain}`];
}

/** The bridge's nftables masquerade table (family inet) and the chain of its per-address rules. */
const NFT_MASQ_TABLE = "cni_plugins_masquerade";
const NFT_MASQ_CHAIN = "masq_checks";

type FailMasquerade = (ms: Masquerade[], e: unknown) => void;

/** Removes these masquerade rules, iptables' and nftables'. The failures, by target. */
async function removeMasquerades(targets: Masquerade[]): Promise<Map<Masquerade, CniError>> {
  const failed = new Map<Masquerade, CniError>();
  const failWith =
    (what: (m: Masquerade) => string, hand: (m: Masquerade) => string): FailMasquerade =>
    (ms, e) => {
      for (const m of ms)
        if (!failed.has(m))
          failed.set(
            m,
            new CniError(
              CNI_ERROR.IO_FAILURE,
              `cannot remove the bridge plugin's masquerade rules (${what(m)}) of container ${m.cid}: ${errorMessage(e)}`,
              `the next DEL or GC tries again; by hand: ${hand(m)}`,
            ),
          );
    };
  const kernel = new Kernel();
  await removeIptablesMasquerades(
    kernel,
    targets,
    failWith(
      (m) => `chain ${m.chain}`,
      (m) =>
        `iptables -t nat -S | grep ${m.chain}, delete those rules (-D), then iptables -t nat -F ${m.chain} and -X ${m.chain}`,
    ),
  );
  await removeNftMasquerades(
    kernel,
    targets.filter((m) => m.nft.length > 0),
    failWith(
      (m) => `nftables, commented ${m.nft.join(", ")}`,
      () =>
        `nft -a list chain inet ${NFT_MASQ_TABLE} ${NFT_MASQ_CHAIN}, then nft delete rule inet ${NFT_MASQ_TABLE} ${NFT_MASQ_CHAIN} handle <n> for those rules`,
    ),
  );
  return failed;
}

/**
 * The iptables part: one nat listing per family, and one iptables-restore transaction (--noflush:
 * nothing else touched) for all, each taking the xtables lock; if that fails, one per chain, so
 * that one container's trouble keeps no other's. Only what is there is named, so removing what is
 * gone already does nothing.
 */
async function removeIptablesMasquerades(kernel: Kernel, targets: Masquerade[], fail: FailMasquerade): Promise<void> {
  for (const family of [4, 6] as const) {
    const ours = targets.filter((m) => m.families.includes(family));
    if (ours.length === 0) continue;
    let rules: string[] | undefined;
    try {
      rules = await kernel.iptablesRules(family, "nat");
    } catch (e) {
      // Asked for nftables, a pod may have no iptables rules at all: an iptables that can never list
      // (iptables-nft's "incompatible" nat table) must not fail its DEL or GC for ever. Any other
      // failure (a held xtables lock) passes, and a bridge before 1.6 (which ignores the key) made
      // the chain: it fails, so that the kept file stays for the retry.
      const never = /incompatible/i.test(errorMessage(e));
      const asked = never ? ours.filter((m) => m.nftAsked) : [];
      if (asked.length > 0)
        warn(
          `cannot list the IPv${family} nat table (${errorMessage(e)}): taken as no bridge masquerade chain where ipMasqBackend is "nftables"; a bridge before 1.6 ignores the key, so check by hand for chains ${asked.map((m) => m.chain).join(", ")} and the jumps to them`,
        );
      fail(
        ours.filter((m) => !asked.includes(m)),
        e,
      );
      continue;
    }
    // No iptables or no nat table of this family here: the bridge plugin made no rules there.
    if (rules === undefined) continue;
    // All of a chain's rules go once any of its attachments was the container's last on the network.
    const chains = new Map<string, Masquerade[]>();
    for (const m of ours) chains.set(m.chain, [...(chains.get(m.chain) ?? []), m]);
    const scripts = [...chains].flatMap(([chain, ms]) => {
      const all = ms.some((m) => !m.sources);
      const lines = masqueradeScript(rules, chain, all ? undefined : ms.flatMap((m) => m.sources ?? []));
      return lines.length > 0 ? [{ ms, lines }] : [];
    });
    if (scripts.length === 0) continue;
    const { error } = await kernel.iptablesDelete(
      family,
      "nat",
      scripts.flatMap((s) => s.lines),
    );
    if (!error) continue;
    // A held xtables lock would make each chain's retry wait as long again (-w): fail them all.
    if (scripts.length === 1 || /xtables lock/i.test(error.message))
      fail(
        scripts.flatMap((s) => s.ms),
        error,
      );
    else
      for (const s of scripts) {
        const again = (await kernel.iptablesDelete(family, "nat", s.lines)).error;
        if (again) fail(s.ms, again);
      }
  }
}

/**
 * The nftables part: the rules of the bridge's masq_checks chain whose comment starts with a
 * target's hash, by handle, in one `nft -f` transaction (one per target if that fails). No nft,
 * or no such table, is nothing to remove: the bridge writes them with nft (knftables). Nor is an
 * nft that cannot list them for a target whose backend is unset (see nftAsked): a DEL failing on
 * it would fail for ever, its pod left Terminating.
 */
async function removeNftMasquerades(kernel: Kernel, targets: Masquerade[], fail: FailMasquerade): Promise<void> {
  if (targets.length === 0) return;
  let rules: Array<{ handle: number; comment: string }>;
  try {
    if (!(await kernel.nftTables()).includes(`inet ${NFT_MASQ_TABLE}`)) return;
    const listing = await kernel.nftJson<{
      nftables: Array<{ rule?: { chain?: string; handle?: number; comment?: unknown } }>;
    }>(["table", "inet", NFT_MASQ_TABLE]);
    rules = listing.nftables.flatMap(({ rule: r }) =>
      r?.chain === NFT_MASQ_CHAIN && typeof r.handle === "number" && typeof r.comment === "string"
        ? [{ handle: r.handle, comment: r.comment }]
        : [],
    );
  } catch (e) {
    if (isWeftError(e, "KERNEL_TOOL_MISSING")) return;
    const asked = targets.filter((m) => m.nftAsked);
    if (asked.length < targets.length)
      warn(
        `cannot list nftables (${errorMessage(e)}): taken as no bridge masquerade rules there where ipMasqBackend is unset (a bridge uses nftables only where nft works)`,
      );
    fail(asked, e);
    return;
  }
  const scripts = targets.flatMap((m) => {
    const lines = rules
      .filter((r) => m.nft.some((hash) => r.comment.startsWith(hash)))
      .map((r) => `delete rule inet ${NFT_MASQ_TABLE} ${NFT_MASQ_CHAIN} handle ${r.handle}`);
    return lines.length > 0 ? [{ m, lines }] : [];
  });
  if (scripts.length === 0) return;
  const all = await kernel.nft(`${scripts.flatMap((s) => s.lines).join("\n")}\n`).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (all === undefined) return;
  if (scripts.length === 1) return fail([scripts[0].m], all);
  for (const s of scripts) await kernel.nft(`${s.lines.join("\n")}\n`).catch((e: unknown) => fail([s.m], e));
}

async function readKept(path: string): Promise<Kept | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(CNI_ERROR.IO_FAILURE, `cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const { [KEPT_IFNAME]: ifName, [KEPT_LEFT]: left, ...d } = JSON.parse(text) as Record<string, unknown>;
    // Files kept by flannel's plugin or an older weft have no interface name.
    if (typeof d.type === "string")
      return {
        d,
        ifName: typeof ifName === "string" ? ifName : undefined,
        left:
          typeof left === "object" && left !== null
            ? leftOf(left as { sources?: unknown; ifNames?: unknown })
            : undefined,
      };
  } catch {
    // handled below
  }
  throw new CniError(
    CNI_ERROR.DECODE_FAILURE,
    `${path} (the delegate config kept at ADD) is damaged`,
    "remove the pod's interface by hand and delete that file",
  );
}

/** CHECK: after a lease change a pod's address may no longer belong to this node. */
function checkAddressesInSubnet(prevResult: Record<string, unknown>, env: SubnetEnv, path: string): void {
  const ips = (prevResult.ips as Array<{ address?: unknown }> | undefined) ?? [];
  for (const ip of ips) {
    const c = typeof ip.address === "string" ? parseCidr(ip.address) : undefined;
    if (!c) continue;
    const fam = env.families.find((f) => f.subnet.family === c.family);
    const addr = { ...c, len: c.family === 4 ? 32 : 128 };
    if (fam && !cidrContains(fam.subnet, addr)) {
      throw new CniError(
        CNI_ERROR.ADDRESS_OUTSIDE_SUBNET,
        `pod address ${ip.address} is outside this node's subnet ${networkOf(fam.subnet)} (${path}): the node's lease changed; recreate the pod`,
      );
    }
  }
}
