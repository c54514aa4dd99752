// Sorting `perf script -F comm,pid,tid,ip,sym` samples (each a header line, then its call stack,
// innermost frame first) into the categories bench:profile reports. A sample is weft's or iperf3's
// by its process id, not its command name: other work on a shared machine runs node and iperf3
// too. The first rule that matches wins: a sample in Wasm is Wasm whoever called it; a kernel copy
// is filed under the syscall it serves, apart from the rest of that syscall's path (for TUN writes
// that rest includes the pod's TCP receive, run in the writer's softirq; for UDP sends, the veth
// and bridge hops); softirq work that lands on no process of ours (kernel vxlan's receive path, in
// an idle CPU's or another process's time) is counted apart from that process's own work.

export interface Profile {
  total: number;
  /** Sampling rate (Hz), so that samples convert to CPU seconds. */
  rate: number;
  /** Category name -> samples, largest first. */
  categories: Map<string, number>;
  /** Wasm function name -> self samples. */
  wasm: Map<string, number>;
}

const COPY = /\b_copy_(to|from)_iter\b|\bcopy_user_|\brep_movs/;

/** The processes whose samples are the profiled path's own. */
export interface ProfiledPids {
  /** The process running the dataplanes (bench:profile itself, all its threads). */
  weft: ReadonlySet<number>;
  /** The setup's iperf3 client and server. */
  iperf3: ReadonlySet<number>;
}

function classify(pid: number, frames: string[], own: ProfiledPids): string {
  const inner = frames[0] ?? "";
  const all = frames.join("\n");
  const softirq = /handle_softirqs|__do_softirq|net_rx_action/.test(all);
  // pid 0 is the idle task (swapper): idle unless a softirq ran on its time.
  if (/pv_native_safe_halt|default_idle|cpuidle/.test(inner) || (pid === 0 && !softirq)) return "idle";
  if (own.iperf3.has(pid)) return "iperf3 (its syscalls, TCP stack, copies)";
  if (!own.weft.has(pid))
    return softirq ? "softirq outside our processes (idle CPUs, ksoftirqd, others' time)" : "other processes";
  if (inner.includes("wasm-function")) return "weft: Wasm";
  const copy = COPY.test(inner);
  const path = (name: string) => `weft: ${name} ${copy ? "(kernel copy)" : "(rest)"}`;
  if (/tun_do_read|tun_chr_read_iter/.test(all)) return path("TUN readv");
  if (/tun_get_user/.test(all)) return path("TUN writev");
  if (/udp_sendmsg|sendmmsg/.test(all)) return path("UDP sendmmsg");
  if (/udp_recvmsg|recvmmsg/.test(all)) return path("UDP recvmmsg");
  if (/do_sys_poll|sys_poll/.test(all)) return "weft: poll (waiting for I/O)";
  if (/entry_SYSCALL|do_syscall_64/.test(all)) return "weft: other syscalls";
  if (/handle_softirqs|irq/.test(all)) return "weft: softirq, interrupts";
  if (/memmove|memcpy/.test(inner)) return "weft: memmove (Wasm memory.copy)";
  return "weft: JS, V8, N-API glue";
}

/** `wasmNames[i]` names Wasm function i (perf shows JIT frames as wasm-function[i]). */
export function categorize(script: string, rate: number, wasmNames: string[], own: ProfiledPids): Profile {
  const categories = new Map<string, number>();
  const wasm = new Map<string, number>();
  let total = 0;
  let pid: number | undefined;
  let frames: string[] = [];
  const flush = () => {
    if (pid === undefined) return;
    const c = classify(pid, frames, own);
    categories.set(c, (categories.get(c) ?? 0) + 1);
    if (c === "weft: Wasm") {
      const i = /wasm-function\[(\d+)\]/.exec(frames[0])?.[1];
      const name = i === undefined ? "?" : (wasmNames[Number(i)] ?? `wasm-function[${i}]`);
      wasm.set(name, (wasm.get(name) ?? 0) + 1);
    }
    total++;
    pid = undefined;
    frames = [];
  };
  for (const line of script.split("\n")) {
    if (line.trim() === "") flush();
    // The header: the command name (which may hold spaces), then pid/tid.
    else if (pid === undefined && !/^\s/.test(line)) pid = Number(/(\d+)\/\d+\s*$/.exec(line)?.[1] ?? -1);
    else frames.push(line.trim().replace(/^[0-9a-f]+\s+/, ""));
  }
  flush();
  return { total, rate, categories: new Map([...categories].sort((a, b) => b[1] - a[1])), wasm };
}
