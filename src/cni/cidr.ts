// Addresses and prefixes of either family as the CNI plugin needs them: parsed from subnet.env and
// from results, masked to their network, tested for containment, printed canonically. Bytes, not
// numbers, so one code path serves IPv4 and IPv6.

export interface Cidr {
  family: 4 | 6;
  /** The address as written (host bits kept). */
  bytes: Uint8Array;
  len: number;
}

export function parseAddress(text: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) {
    const parts = text.split(".").map(Number);
    return parts.every((p) => p <= 255) ? { family: 4, bytes: Uint8Array.from(parts) } : undefined;
  }
  if (!text.includes(":") || /[^0-9a-fA-F:.]/.test(text)) return undefined;
  // The WHATWG URL parser validates IPv6 and writes it canonically (hex groups, one "::").
  let host: string;
  try {
    host = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const [head, tail] = host.split("::");
  const h = head ? head.split(":") : [];
  const t = tail === undefined ? [] : tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    bytes[2 * i] = v >> 8;
    bytes[2 * i + 1] = v & 255;
  });
  return { family: 6, bytes };
}

export function parseCidr(text: string): Cidr | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return undefined;
  const a = parseAddress(m[1]);
  const len = Number(m[2]);
  if (!a || len > a.bytes.length * 8) return undefined;
  return { ...a, len };
}

export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

function masked(bytes: Uint8Array, len: number): Uint8Array {
  return bytes.map((b, i) => (i * 8 >= len ? 0 : i * 8 + 8 <= len ? b : b & (0xff << (8 - (len - i * 8)))));
}

/** The prefix's network, as "198.19.3.0/24" or "2001:2:0:8003::/64". */
export function networkOf(c: Cidr): string {
  return `${formatAddress(masked(c.bytes, c.len))}/${c.len}`;
}

/** Whether `inner` (address or prefix) lies within `outer`. */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || inner.len < outer.len) return false;
  const a = masked(outer.bytes, outer.len);
  const b = masked(inner.bytes, outer.len);
  return a.every((x, i) => x === b[i]);
}

/** The prefix's first host address (network + 1): host-local's default gateway. */
export function firstHostOf(c: Cidr): string {
  const b = masked(c.bytes, c.len);
  for (let i = b.length - 1; i >= 0 && ++b[i] === 256; i--) b[i] = 0;
  return formatAddress(b);
}
