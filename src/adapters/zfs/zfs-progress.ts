/**
 * stderr is the adapter's only channel besides its one response: progress lines are
 * JSON objects (`{"progress":0.42,"message":"..."}`), anything else is free text that
 * mamori logs. stdout is never written here.
 */
export function reportProgress(fraction: number, message: string): void {
  const progress = Math.round(Math.min(1, Math.max(0, fraction)) * 1000) / 1000;
  process.stderr.write(`${JSON.stringify({ progress, message })}\n`);
}

export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

const MiB = 1024 * 1024;

export function mib(bytes: number): string {
  return bytes < MiB ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / MiB).toFixed(1)} MiB`;
}

/**
 * Progress of the devices of one command, one after another: device `index` of `count`
 * is `done` of its way. Lines are at most one a second, or every 4 MiB of a stream, so a
 * long send shows life without flooding the log.
 */
export class CommandProgress {
  readonly #count: number;
  #lastAt = 0;
  #lastBytes = 0;

  constructor(count: number) {
    this.#count = Math.max(1, count);
  }

  step(index: number, done: number, message: string): void {
    reportProgress((index + Math.min(0.99, Math.max(0, done))) / this.#count, message);
    this.#lastAt = Date.now();
  }

  /** A stream's bytes so far; `expected` is a full send's estimate, 0 when unknown (incremental). */
  bytes(index: number, device: string, sent: number, expected: number): void {
    if (sent - this.#lastBytes < 4 * MiB && Date.now() - this.#lastAt < 1000) return;
    this.#lastBytes = sent;
    this.step(
      index,
      expected > 0 ? sent / expected : 0,
      `${device}: sent ${mib(sent)}${expected > 0 ? ` of about ${mib(expected)}` : ''}`,
    );
  }

  resetBytes(): void {
    this.#lastBytes = 0;
  }
}
