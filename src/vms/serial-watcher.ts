import { open, stat } from 'node:fs/promises';

export interface SerialEvent {
  line: string;
  at: Date;
}

/**
 * Follows a VM's serial log file from a given offset and hands each complete line to
 * the callback. Polling, not fs.watch: it keeps working across file truncation at the
 * next start and costs one stat per interval.
 */
export class SerialWatcher {
  #path: string;
  #offset: number;
  #partial = '';
  #timer: NodeJS.Timeout | null = null;
  #onLine: (e: SerialEvent) => void;
  #busy = false;

  constructor(path: string, fromOffset: number, onLine: (e: SerialEvent) => void) {
    this.#path = path;
    this.#offset = fromOffset;
    this.#onLine = onLine;
  }

  static async fromEnd(path: string, onLine: (e: SerialEvent) => void): Promise<SerialWatcher> {
    let size = 0;
    try {
      size = (await stat(path)).size;
    } catch {
      size = 0;
    }
    return new SerialWatcher(path, size, onLine);
  }

  start(intervalMs = 200): void {
    this.#timer = setInterval(() => void this.poll(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async poll(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const size = (await stat(this.#path)).size;
      if (size < this.#offset) this.#offset = 0;
      if (size === this.#offset) return;
      const fh = await open(this.#path, 'r');
      try {
        const buf = Buffer.alloc(size - this.#offset);
        await fh.read(buf, 0, buf.length, this.#offset);
        this.#offset = size;
        const text = this.#partial + buf.toString('utf8');
        const lines = text.split('\n');
        this.#partial = lines.pop() ?? '';
        const at = new Date();
        for (const line of lines) this.#onLine({ line: line.replace(/\r$/, ''), at });
      } finally {
        await fh.close();
      }
    } catch {
      // The log may not exist yet right after start; the next poll tries again.
    } finally {
      this.#busy = false;
    }
  }
}
