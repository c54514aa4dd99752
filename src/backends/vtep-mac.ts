// The VTEP MAC this node announces, kept in the state dir so it survives restarts: peers hold it in
// their neighbour entries, FDB entries and next hops, and a node that came back with a new one
// would be unreachable until every peer had heard. Like flannel's, it is random and locally
// administered. Read and written synchronously, so a userspace backend can be built (and its TUN
// device opened) in one synchronous step inside a namespace.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { writeFileAtomicSync } from "../fs/atomic-write.js";
import { join } from "node:path";
import { WeftError } from "../errors.js";
import { formatMac, parseMac } from "../net/ipv4.js";

export const VTEP_MAC_FILE = "vtep-mac";
/** The IPv6 VXLAN device's own MAC (flannel-v6.<VNI> is a device of its own, as in flannel). */
export const VTEP_MAC_FILE_IPV6 = "vtep-mac-ipv6";

/** The saved VTEP MAC of a family's device, or a new one saved first (atomically and durably). */
export function loadVtepMac(stateDir: string, family: 4 | 6 = 4): Uint8Array {
  const file = join(stateDir, family === 4 ? VTEP_MAC_FILE : VTEP_MAC_FILE_IPV6);
  let text: string | undefined;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new WeftError(
        "BACKEND_VTEP_MAC_UNREADABLE",
        `cannot read ${file}: ${(err as Error).message}; check the state dir's permissions`,
        { cause: err },
      );
    }
  }
  if (text !== undefined) {
    try {
      return parseMac(text.trim());
    } catch {
      throw new WeftError(
        "BACKEND_VTEP_MAC_CORRUPT",
        `${file} does not hold a MAC address ("${text.trim().slice(0, 40)}"); remove it to get a new VTEP MAC (peers learn it when this node announces it)`,
      );
    }
  }
  const mac = randomBytes(6);
  mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
  saveAtomically(file, formatMac(mac) + "\n");
  return Uint8Array.from(mac);
}

function saveAtomically(file: string, body: string): void {
  try {
    writeFileAtomicSync(file, body, { mode: 0o600, dirMode: 0o700 });
  } catch (err) {
    throw new WeftError(
      "BACKEND_VTEP_MAC_PERSIST_FAILED",
      `cannot save the VTEP MAC to ${file}: ${(err as Error).message}; check the state dir (--state-dir)`,
      { cause: err },
    );
  }
}
