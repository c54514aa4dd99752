// Runs async tasks one at a time, in the order they were queued: kernel programming rounds, the
// agent's backend changes and peer syncs each need this, and each had its own promise chain.
// One error policy: a task's failure goes to whoever queued it (the promise run() returned rejects
// with it) and never to the tasks after it, which run as if it had succeeded. The queue itself
// neither logs nor swallows errors; a caller that does not wait for its task handles them.
export class SerialQueue {
  // Settles when the last queued task has; never rejects, so one failure does not stop the queue.
  private tail: Promise<void> = Promise.resolve();
  /** Tasks queued and not yet settled (the one running included). */
  private unsettled = 0;

  /** Whether a task is running or waiting: one queued now waits for it. */
  get busy(): boolean {
    return this.unsettled > 0;
  }

  /** Runs `task` once every task queued before it has settled; settles as the task does. */
  run<T>(task: () => T | Promise<T>): Promise<T> {
    this.unsettled++;
    const result = this.tail.then(task);
    this.tail = result.then(
      () => void this.unsettled--,
      () => void this.unsettled--,
    );
    return result;
  }

  /** Resolves once every task queued so far has settled (failed ones included). */
  idle(): Promise<void> {
    return this.tail;
  }
}
