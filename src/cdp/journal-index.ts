import type { RecordKind } from './journal-format.js';

/** Where one record of the journal is: what it covers, when, and where its data lies. */
export interface JournalEntry {
  seq: number;
  kind: RecordKind;
  flags: number;
  timeUs: number;
  offset: number;
  length: number;
  /** The segment file (an index into JournalIndex.segments) and the payload's position in it. */
  segment: number;
  payloadAt: number;
}

const KIND_CODE: Record<RecordKind, number> = { write: 1, zero: 2, checkpoint: 3 };
const KIND_OF: RecordKind[] = ['write', 'write', 'zero', 'checkpoint'];

/**
 * Every record of a journal in sequence order, in columns of typed arrays: hours of writes at
 * a few hundred a second are millions of records, which as objects would cost the heap ten
 * times as much. Checkpoints are also listed apart, for lookups by time.
 */
export class JournalIndex {
  readonly segments: string[] = [];
  #firstSeq = 1;
  #count = 0;
  #kind = new Uint8Array(1024);
  #flags = new Uint16Array(1024);
  #length = new Uint32Array(1024);
  #segment = new Uint32Array(1024);
  #time = new Float64Array(1024);
  #offset = new Float64Array(1024);
  #payloadAt = new Float64Array(1024);
  readonly #checkpoints: number[] = [];

  /** The sequence number of the first record (records before it were folded into the base). */
  get firstSeq(): number {
    return this.#firstSeq;
  }

  /** The next sequence number to be written. */
  get nextSeq(): number {
    return this.#firstSeq + this.#count;
  }

  get count(): number {
    return this.#count;
  }

  /** An empty index whose first record will be `seq`. */
  startAt(seq: number): void {
    if (this.#count !== 0) throw new Error('startAt on a non-empty journal index');
    this.#firstSeq = seq;
  }

  addSegment(file: string): number {
    this.segments.push(file);
    return this.segments.length - 1;
  }

  add(e: JournalEntry): void {
    if (e.seq !== this.nextSeq) throw new Error(`journal record ${e.seq} where ${this.nextSeq} was due`);
    if (this.#count === this.#kind.length) this.#grow();
    const i = this.#count++;
    this.#kind[i] = KIND_CODE[e.kind];
    this.#flags[i] = e.flags;
    this.#length[i] = e.length;
    this.#segment[i] = e.segment;
    this.#time[i] = e.timeUs;
    this.#offset[i] = e.offset;
    this.#payloadAt[i] = e.payloadAt;
    if (e.kind === 'checkpoint') this.#checkpoints.push(i);
  }

  get(seq: number): JournalEntry {
    const i = seq - this.#firstSeq;
    if (i < 0 || i >= this.#count) throw new RangeError(`no journal record ${seq}`);
    return {
      seq,
      kind: KIND_OF[this.#kind[i]!]!,
      flags: this.#flags[i]!,
      timeUs: this.#time[i]!,
      offset: this.#offset[i]!,
      length: this.#length[i]!,
      segment: this.#segment[i]!,
      payloadAt: this.#payloadAt[i]!,
    };
  }

  /** The checkpoints, oldest first. */
  checkpoints(): JournalEntry[] {
    return this.#checkpoints.map((i) => this.get(this.#firstSeq + i));
  }

  /** The last checkpoint at or before `timeUs` (a point in time rounds down), or null. */
  checkpointAtOrBefore(timeUs: number): JournalEntry | null {
    let lo = 0;
    let hi = this.#checkpoints.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.#time[this.#checkpoints[mid]!]! <= timeUs) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found < 0 ? null : this.get(this.#firstSeq + this.#checkpoints[found]!);
  }

  /** The checkpoints with fromUs <= time <= toUs, oldest first. */
  checkpointsBetween(fromUs: number, toUs: number): JournalEntry[] {
    // The first checkpoint at or after fromUs (checkpoint times never go back).
    let lo = 0;
    let hi = this.#checkpoints.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#time[this.#checkpoints[mid]!]! < fromUs) lo = mid + 1;
      else hi = mid;
    }
    const out: JournalEntry[] = [];
    for (let k = lo; k < this.#checkpoints.length && this.#time[this.#checkpoints[k]!]! <= toUs; k++)
      out.push(this.get(this.#firstSeq + this.#checkpoints[k]!));
    return out;
  }

  #grow(): void {
    const n = this.#kind.length * 2;
    const grow = <T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.#kind = grow(this.#kind, (k) => new Uint8Array(k));
    this.#flags = grow(this.#flags, (k) => new Uint16Array(k));
    this.#length = grow(this.#length, (k) => new Uint32Array(k));
    this.#segment = grow(this.#segment, (k) => new Uint32Array(k));
    this.#time = grow(this.#time, (k) => new Float64Array(k));
    this.#offset = grow(this.#offset, (k) => new Float64Array(k));
    this.#payloadAt = grow(this.#payloadAt, (k) => new Float64Array(k));
  }
}
