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

/** A window of another reader: a partition is a slice of its disk. */
export function sliceReader(base: ByteReader, start: number, size: number): ByteReader {
  return {
    size,
    read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || length < 0 || offset + length > size) {
        return Promise.reject(new RangeError(`read ${offset}+${length} is outside this ${size}-byte window`));
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
      if (offset < 0 || length < 0 || offset + length > buf.length) throw new RangeError(`read ${offset}+${length} is outside this ${buf.length}-byte buffer`);
      return buf.subarray(offset, offset + length);
    },
  };
}
