/** A byte range of a disk and the journal record whose data it now reads. */
export interface OverlayExtent {
  start: number;
  end: number;
  seq: number;
}

/**
 * Which journal record each byte of a disk reads from, once records are applied in order: a
 * later record's range replaces what earlier ones cover, splitting them where it overlaps.
 * Kept as sorted, non-overlapping extents (a disk's distinct written ranges, not its records).
 */
export class ExtentOverlayMap {
  #extents: OverlayExtent[] = [];

  get size(): number {
    return this.#extents.length;
  }

  /** Record `seq` now covers [start, end). */
  apply(start: number, end: number, seq: number): void {
    if (end <= start) return;
    const list = this.#extents;
    const i = this.#firstEndingAfter(start);
    const replaced: OverlayExtent[] = [];
    let j = i;
    while (j < list.length && list[j]!.start < end) j++;
    const head = i < j && list[i]!.start < start ? { ...list[i]!, end: start } : null;
    const tail = j > i && list[j - 1]!.end > end ? { ...list[j - 1]!, start: end } : null;
    if (head !== null) replaced.push(head);
    replaced.push({ start, end, seq });
    if (tail !== null) replaced.push(tail);
    list.splice(i, j - i, ...replaced);
  }

  /** The extents overlapping [start, end), clipped to it, in order (gaps read from the base). */
  overlapping(start: number, end: number): OverlayExtent[] {
    const out: OverlayExtent[] = [];
    for (let i = this.#firstEndingAfter(start); i < this.#extents.length; i++) {
      const e = this.#extents[i]!;
      if (e.start >= end) break;
      out.push({ start: Math.max(e.start, start), end: Math.min(e.end, end), seq: e.seq });
    }
    return out;
  }

  /** Index of the first extent whose end lies after `at`. */
  #firstEndingAfter(at: number): number {
    let lo = 0;
    let hi = this.#extents.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#extents[mid]!.end <= at) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
