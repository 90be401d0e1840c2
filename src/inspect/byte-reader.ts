import { MamoriError } from '../core/mamori-error.js';

/**
 * What the inspector reads through: a byte range of a disk (or of one partition of it). The
 * bytes come from QEMU's block layer (an NBD export of the source), never from parsing a
 * container format here; readers above this see plain disk bytes.
 */
export interface ByteReader {
  /** Bytes in this view. */
  readonly size: number;
  /** Exactly `length` bytes at `offset`; reads past the end are an error (FILESYSTEM_UNREADABLE). */
  read(offset: number, length: number): Promise<Buffer>;
}

/**
 * A window of another reader: a partition is a slice of its disk. A read past its end is
 * what a filesystem or LVM header that claims more than its partition asks for: damage,
 * reported as FILESYSTEM_UNREADABLE like a read past the disk's end.
 */
export function sliceReader(base: ByteReader, start: number, size: number): ByteReader {
  return {
    size,
    read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || length < 0 || offset + length > size) {
        return Promise.reject(
          new MamoriError(
            'FILESYSTEM_UNREADABLE',
            `a read at byte ${offset} (${length} bytes) falls outside this ${size}-byte partition: what it holds points past its end (a damaged partition table or filesystem?)`,
          ),
        );
      }
      return base.read(start + offset, length);
    },
  };
}

/** A reader over a buffer held in memory (tests, and small metadata already read). */
export function bufferReader(buf: Buffer): ByteReader {
  return {
    size: buf.length,
    async read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || length < 0 || offset + length > buf.length)
        throw new RangeError(`read ${offset}+${length} is outside this ${buf.length}-byte buffer`);
      return buf.subarray(offset, offset + length);
    },
  };
}
