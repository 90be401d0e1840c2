/**
 * Bytes received and not yet parsed, as the chunks they came in: a parser takes exact
 * lengths off the front without joining chunks unless a field straddles two of them.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first `n` bytes, left in place; the caller checked `length` first. */
  peek(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`peek(${n}) of ${this.#length} queued bytes`);
    const first = this.#chunks[0];
    if (first !== undefined && first.length >= n) return first.subarray(0, n);
    // Only the chunks that hold the n bytes: a header across two chunks, with megabytes queued
    // behind it (a large record arriving), must not copy them all at every look.
    const out = Buffer.allocUnsafe(n);
    for (let k = 0, done = 0; done < n; k++)
      done += this.#chunks[k]!.copy(out, done, 0, Math.min(this.#chunks[k]!.length, n - done));
    return out;
  }

  /** The first `n` bytes, removed; the caller checked `length` first. */
  take(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`take(${n}) of ${this.#length} queued bytes`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#length -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const head = this.#chunks[0]!;
      const k = Math.min(head.length, n - done);
      head.copy(out, done, 0, k);
      if (k === head.length) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(k);
      done += k;
    }
    this.#length -= n;
    return out;
  }

  /** Everything queued, removed (a handshake hands what followed it to the transmission phase). */
  drain(): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#length);
    this.#chunks = [];
    this.#length = 0;
    return all;
  }
}
