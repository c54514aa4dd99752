// Whether a process still exists, for what a process leaves behind with its pid in it (an agent's
// state-dir lock, the lab's namespace names).

/** True while `pid` exists: signal 0 checks without sending; EPERM means it exists as another user's. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
