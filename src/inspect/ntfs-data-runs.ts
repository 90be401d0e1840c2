import { unreadable } from './ntfs-errors.js';
import { readIntLE } from './ntfs-integers.js';

// ---------------------------------------------------------------------------------------------
// Data runs (mapping pairs)

export interface Run {
  /** First virtual cluster of the run within its attribute. */
  vcn: number;
  /** First logical cluster on the volume; null for a sparse run (reads as zeros). */
  lcn: number | null;
  length: number;
}

/** Each pair: a header byte (low nibble = size of length, high nibble = size of LCN delta), then the two fields. */
export function decodeRuns(
  buf: Buffer,
  start: number,
  end: number,
  firstVcn: number,
  clusterCount: number,
  volumeOffset: number,
): Run[] {
  const runs: Run[] = [];
  let pos = start;
  let vcn = firstVcn;
  let lcn = 0;
  while (pos < end) {
    const header = buf[pos] ?? 0;
    if (header === 0) return runs;
    const lengthBytes = header & 0x0f;
    const offsetBytes = header >> 4;
    if (lengthBytes === 0 || lengthBytes > 8 || offsetBytes > 8 || pos + 1 + lengthBytes + offsetBytes > end) {
      unreadable(`malformed data run header 0x${header.toString(16)}`, volumeOffset + pos);
    }
    const length = readIntLE(buf, pos + 1, lengthBytes, false);
    if (length <= 0) unreadable('data run of zero length', volumeOffset + pos);
    let runLcn: number | null = null;
    if (offsetBytes > 0) {
      lcn += readIntLE(buf, pos + 1 + lengthBytes, offsetBytes, true);
      if (lcn < 0 || lcn + length > clusterCount) {
        unreadable(
          `data run points to clusters ${lcn}..${lcn + length - 1}, outside the ${clusterCount}-cluster volume`,
          volumeOffset + pos,
        );
      }
      runLcn = lcn;
    }
    runs.push({ vcn, lcn: runLcn, length });
    vcn += length;
    pos += 1 + lengthBytes + offsetBytes;
  }
  unreadable('data runs are not terminated', volumeOffset + end);
}
