import type { ByteReader } from './byte-reader.js';
import type { FatGeometry } from './fat-boot-sector.js';
import { unreadable } from './fat-errors.js';

/** Longest single data read; longer contiguous runs are split so one request stays reasonable. */
const MAX_DATA_READ_BYTES = 4 * 1024 * 1024;

/** Runs of consecutive cluster numbers, so contiguous data is fetched with one read. */
function contiguousRuns(chain: number[]): { first: number; count: number }[] {
  const runs: { first: number; count: number }[] = [];
  for (const cluster of chain) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.first + last.count === cluster) last.count += 1;
    else runs.push({ first: cluster, count: 1 });
  }
  return runs;
}

/**
 * Bytes of the FAT partition: checked reads at an offset, and the data held by a chain of
 * clusters. Every read of the FAT, the root region and file or directory data goes through here.
 */
export class FatVolume {
  readonly #reader: ByteReader;
  readonly #geometry: FatGeometry;

  constructor(reader: ByteReader, geometry: FatGeometry) {
    this.#reader = reader;
    this.#geometry = geometry;
  }

  /** The first `length` bytes held by a chain of clusters, one read per contiguous run. */
  async readClusters(chain: number[], length: number, what: string): Promise<Buffer> {
    const { clusterSize } = this.#geometry.info;
    const pieces: Buffer[] = [];
    let remaining = length;
    for (const run of contiguousRuns(chain)) {
      let offset = this.#geometry.dataOffset + (run.first - 2) * clusterSize;
      let runBytes = Math.min(run.count * clusterSize, remaining);
      while (runBytes > 0) {
        const piece = Math.min(runBytes, MAX_DATA_READ_BYTES);
        pieces.push(await this.readAt(offset, piece, what));
        offset += piece;
        runBytes -= piece;
        remaining -= piece;
      }
      if (remaining === 0) break;
    }
    return pieces.length === 1 && pieces[0] !== undefined ? pieces[0] : Buffer.concat(pieces, length - remaining);
  }

  async readAt(offset: number, length: number, what: string): Promise<Buffer> {
    if (offset + length > this.#reader.size) {
      throw unreadable(
        `Reading ${what} needs bytes ${offset}..${offset + length} of the partition, but it is only ${this.#reader.size} bytes long; the partition is truncated or the FAT metadata is damaged.`,
      );
    }
    const bytes = await this.#reader.read(offset, length);
    if (bytes.length !== length) {
      throw unreadable(
        `Reading ${what} at byte offset ${offset} of the partition returned ${bytes.length} bytes instead of ${length}.`,
      );
    }
    return bytes;
  }
}
