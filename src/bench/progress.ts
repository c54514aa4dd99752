// The benchmark's progress display: a cli-progress bar on a terminal showing the step running now
// and what is left; one line per step when stderr is not a terminal (CI logs, tests). The bar
// counts estimated seconds, not steps, so that its time left is meaningful when a 10-second
// iperf3 run follows a 1-second ping.
import { SingleBar } from "cli-progress";

export interface Step {
  label: string;
  /** Estimated seconds. */
  weight: number;
}

export class Progress {
  private readonly bar?: SingleBar;
  private done = 0;
  private index = 0;
  private current?: Step;
  private readonly startedAt = Date.now();

  constructor(private readonly steps: Step[]) {
    if (!process.stderr.isTTY) return;
    this.bar = new SingleBar({
      format: "{bar} {percentage}% | step {step}/{steps} | {task} | {left} left",
      barsize: 24,
      hideCursor: true,
      stream: process.stderr,
    });
    this.bar.start(this.total(), 0, { step: 0, steps: steps.length, task: "starting", left: this.left() });
  }

  /** Marks the next planned step as running. */
  begin(): Step {
    const step = this.steps[this.index++];
    this.current = step;
    if (this.bar) this.bar.update(this.done, { step: this.index, task: step.label, left: this.left() });
    else process.stderr.write(`[bench] step ${this.index}/${this.steps.length}: ${step.label}\n`);
    return step;
  }

  /** A detail of the running step (a microbenchmark case): only the bar shows it. */
  detail(text: string): void {
    this.bar?.update(this.done, { task: `${this.current?.label ?? ""}: ${text}`.slice(0, 70) });
  }

  end(): void {
    this.done += this.current?.weight ?? 0;
    this.bar?.update(this.done, { left: this.left() });
  }

  stop(): void {
    this.bar?.stop();
  }

  /**
   * Time left: the estimate of the remaining steps, scaled by how the estimates of the finished
   * ones compared with the time they really took (a busy machine makes everything slower).
   */
  private left(): string {
    const remaining = this.total() - this.done;
    const elapsed = (Date.now() - this.startedAt) / 1000;
    const s = Math.round(this.done > 0 ? (remaining * elapsed) / this.done : remaining);
    return s >= 60 ? `~${Math.floor(s / 60)} min ${s % 60} s` : `~${s} s`;
  }

  private total(): number {
    return this.steps.reduce((n, s) => n + s.weight, 0);
  }
}
