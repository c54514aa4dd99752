// Choosing a backend by net-conf.json's Backend.Type. Synchronous, so that a userspace backend's
// TUN device and sockets open in the namespace the caller is in (see userspace/userspace.ts).
import type { BackendConfig } from "../config/net-conf.js";
import { WeftError } from "../errors.js";
import { BACKEND_TYPES, DEFAULT_VNI, type Backend, type BackendContext, type BackendOptions } from "./backend.js";
import { HostGwBackend } from "./host-gw/host-gw.js";
import { tunDeviceName, UserspaceBackend } from "./userspace/userspace.js";
import { vxlanDeviceName } from "./vxlan/device.js";
import { VxlanBackend } from "./vxlan/vxlan.js";

/** The userspace dataplane's keys, which wasm-vxlan and udp share. */
function dataplaneOptions(b: Extract<BackendConfig, { Type: "wasm-vxlan" | "udp" }>): BackendOptions {
  return {
    port: b.Port,
    workers: b.Workers,
    queuesPerWorker: b.QueuesPerWorker,
    offloads: b.Offloads,
    busyPollUs: b.BusyPollMicros,
    queueDelayUs: b.QueueDelayMicros,
    flowQueue: b.FlowQueue,
  };
}

/** net-conf.json's Backend keys as the backends take them. */
export function backendOptions(b: BackendConfig): BackendOptions {
  switch (b.Type) {
    case "vxlan":
      return { vni: b.VNI, port: b.Port, mtu: b.MTU, directRouting: b.DirectRouting, gbp: b.GBP, learning: b.Learning };
    case "wasm-vxlan":
      return { vni: b.VNI, mtu: b.MTU, ipv6OverIpv4Port: b.IPv6OverIPv4Port, ...dataplaneOptions(b) };
    case "udp":
      return dataplaneOptions(b);
    case "host-gw":
      return {};
  }
}

/** The overlay device an instance of backend `type` makes for `family` (host-gw makes none). */
export function overlayDevice(type: string, options: BackendOptions, family: 4 | 6): string | undefined {
  const vni = options.vni ?? DEFAULT_VNI;
  if (type === "vxlan") return vxlanDeviceName(vni, family);
  if (type === "udp" || type === "wasm-vxlan") return tunDeviceName(type, vni, family);
  return undefined;
}

export function createBackend(type: string, options: BackendOptions, ctx: BackendContext): Backend {
  switch (type) {
    case "vxlan":
      return new VxlanBackend(options, ctx);
    case "host-gw":
      return new HostGwBackend(ctx);
    case "udp":
    case "wasm-vxlan":
      return new UserspaceBackend(type, options, ctx);
    default:
      throw new WeftError("BACKEND_UNKNOWN", `unknown backend type "${type}"; use one of ${BACKEND_TYPES.join(", ")}`);
  }
}
