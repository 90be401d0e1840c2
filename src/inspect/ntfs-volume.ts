import type { ByteReader } from './byte-reader.js';
import type { Run } from './ntfs-data-runs.js';
import { unreadable } from './ntfs-errors.js';
import type { Stream } from './ntfs-stream.js';

/** Reads larger than this are split: block-device transports (NBD) cap a single request. */
const MAX_SINGLE_READ = 8 * 1024 * 1024;

/**
 * Bytes of the NTFS volume: checked reads of the partition and of attribute values, resident or
 * spread over data runs. Everything the MFT and directory code reads goes through here.
 */
export class NtfsVolume {
  readonly #reader: ByteReader;
  readonly #clusterSize: number;

  constructor(reader: ByteReader, clusterSize: number) {
    this.#reader = reader;
    this.#clusterSize = clusterSize;
  }

  async readVolume(offset: number, length: number, what: string): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.#reader.size) {
      unreadable(`${what} (${length} bytes) lies beyond the end of the ${this.#reader.size}-byte partition`, offset);
    }
    const buf = await this.#reader.read(offset, length);
    if (buf.length !== length) unreadable(`short read of ${what}: ${buf.length} of ${length} bytes`, offset);
    return buf;
  }

  /** First run covering `vcn` (runs are sorted by VCN), or -1. */
  static #findRun(runs: Run[], vcn: number): number {
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const run = runs[mid] as Run;
      if (vcn < run.vcn) hi = mid - 1;
      else if (vcn >= run.vcn + run.length) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  volumeOffsetOf(runs: Run[], byteOffset: number): number {
    const cs = this.#clusterSize;
    const run = runs[NtfsVolume.#findRun(runs, Math.floor(byteOffset / cs))];
    return run?.lcn == null ? -1 : run.lcn * cs + (byteOffset - run.vcn * cs);
  }

  /** Bytes [offset, offset + length) of a non-resident value; sparse runs read as zeros. */
  async readRuns(runs: Run[], offset: number, length: number, what: string): Promise<Buffer> {
    const cs = this.#clusterSize;
    const out = Buffer.alloc(length);
    let done = 0;
    let index = NtfsVolume.#findRun(runs, Math.floor(offset / cs));
    while (done < length) {
      const run = runs[index];
      const pos = offset + done;
      if (run === undefined || pos < run.vcn * cs || pos >= (run.vcn + run.length) * cs) {
        unreadable(`the data runs of ${what} do not cover byte ${pos} of it`);
      }
      const take = Math.min(length - done, (run.vcn + run.length) * cs - pos, MAX_SINGLE_READ);
      if (run.lcn !== null) {
        const chunk = await this.readVolume(run.lcn * cs + (pos - run.vcn * cs), take, what);
        chunk.copy(out, done);
      }
      done += take;
      if (offset + done >= (run.vcn + run.length) * cs) index++;
    }
    return out;
  }

  async readStream(stream: Stream, offset: number, length: number, what: string): Promise<Buffer> {
    if (stream.kind === 'resident') {
      if (offset + length > stream.value.length) unreadable(`read past the end of resident ${what}`);
      return Buffer.from(stream.value.subarray(offset, offset + length));
    }
    // Bytes past the initialized size were never written and read as zeros.
    const readable = Math.max(0, Math.min(length, stream.initializedSize - offset));
    if (readable === length) return this.readRuns(stream.runs, offset, length, what);
    const out = Buffer.alloc(length);
    if (readable > 0) (await this.readRuns(stream.runs, offset, readable, what)).copy(out);
    return out;
  }
}
