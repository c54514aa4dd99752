// Choosing a backend by net-conf.json's Backend.Type. Synchronous, so that a userspace backend's
// TUN device and sockets open in the namespace the caller is in (see userspace/userspace.ts).
import { WeftError } from "../errors.js";
import { BACKEND_TYPES, type Backend, type BackendContext, type BackendOptions } from "./backend.js";
import { HostGwBackend } from "./host-gw/host-gw.js";
import { UserspaceBackend } from "./userspace/userspace.js";
import { VxlanBackend } from "./vxlan/vxlan.js";

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
