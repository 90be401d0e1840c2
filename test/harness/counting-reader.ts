import type { ByteReader } from '../../src/inspect/byte-reader.js';

/** A ByteReader that counts what it is asked for: tests of the inspect readers assert they read little. */
export interface CountingReader extends ByteReader {
  reads: number;
  bytes: number;
}

export function counting(inner: ByteReader): CountingReader {
  const counted: CountingReader = {
    size: inner.size,
    reads: 0,
    bytes: 0,
    read(offset: number, length: number): Promise<Buffer> {
      counted.reads++;
      counted.bytes += length;
      return inner.read(offset, length);
    },
  };
  return counted;
}
