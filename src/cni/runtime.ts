// The container runtime's side of CNI, as libcni does it, for everything weft builds pods with
// (the lab, the demo, `weft bench`, the tests): a network config list run plugin by plugin —
// ADD in order, each given the previous result; DEL in reverse; CHECK with the ADD result —
// with `name` and `cniVersion` from the list and capability arguments (portMappings) handed to
// the plugins that declare them, as `runtimeConfig`.
import { CNI_ERROR, CniError } from "./errors.js";
import { execPlugin, type CniArgs } from "./exec.js";

export interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface ConfList {
  cniVersion: string;
  name: string;
  plugins: PluginConf[];
}

/** A CNI result (0.3.1 to 1.0.0 share these fields). */
export interface CniResult {
  cniVersion: string;
  interfaces?: Array<{ name: string; mac?: string; sandbox?: string; mtu?: number }>;
  ips?: Array<{ address: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst: string; gw?: string }>;
  [key: string]: unknown;
}

export interface Attachment {
  containerId: string;
  /** Path of the pod's network namespace. */
  netns: string;
  ifName: string;
  /** Capability arguments, e.g. { portMappings: [{ hostPort, containerPort, protocol }] }. */
  capabilityArgs?: Record<string, unknown>;
}

export class CniRuntime {
  constructor(
    readonly list: ConfList,
    /** CNI_PATH: directories searched for plugins, in order. */
    readonly path: string[],
    /** argv prefix for every plugin, e.g. `ip netns exec <host>` when the host is a namespace. */
    readonly wrap: string[] = [],
  ) {}

  async add(a: Attachment): Promise<CniResult> {
    let prev: CniResult | undefined;
    for (const p of this.list.plugins) prev = (await this.exec("ADD", p, a, prev)) as CniResult;
    if (!prev) throw new CniError(CNI_ERROR.INVALID_CONFIG, `network ${this.list.name} has no plugins`);
    return prev;
  }

  /** CHECK every plugin against the ADD result; rejects with the first plugin's error. */
  async check(a: Attachment, result: CniResult): Promise<void> {
    for (const p of this.list.plugins) await this.exec("CHECK", p, a, result);
  }

  /** DEL in reverse order; `result` is the ADD result when the runtime still has it. */
  async del(a: Attachment, result?: CniResult): Promise<void> {
    for (const p of [...this.list.plugins].reverse()) await this.exec("DEL", p, a, result);
  }

  private exec(command: CniArgs["command"], p: PluginConf, a: Attachment, prevResult?: CniResult): Promise<unknown> {
    const conf: Record<string, unknown> = { ...p, name: this.list.name, cniVersion: this.list.cniVersion };
    const runtimeConfig = Object.fromEntries(
      Object.entries(a.capabilityArgs ?? {}).filter(([k]) => p.capabilities?.[k]),
    );
    if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
    if (prevResult) conf.prevResult = prevResult;
    return execPlugin(
      p.type,
      conf,
      { command, containerId: a.containerId, netns: a.netns, ifName: a.ifName, path: this.path },
      { wrap: this.wrap },
    );
  }
}
