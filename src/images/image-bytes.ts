import type { FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';

/**
 * The bytes of an image as mamori itself reads them, before QEMU opens it: a whole file, or a
 * byte range of one (a VMDK inside an OVA). Every read is bounded by the caller and by the
 * window, so a header that claims huge sizes cannot make us read (or allocate) much.
 */
export interface ImageBytes {
  /** Bytes in the window. */
  readonly size: number;
  /** For messages: the file, or the file and member range. */
  readonly label: string;
  /** Up to `length` bytes at `offset`; fewer only when the window ends first. */
  read(offset: number, length: number): Promise<Buffer>;
}

/** No single header structure read here is larger (a qcow2 cluster is at most 2 MiB). */
export const MAX_HEADER_READ = 2 * 1024 * 1024;

export function fileImageBytes(
  fh: FileHandle,
  size: number,
  label: string,
  window?: { offset: number; size: number },
): ImageBytes {
  const base = window?.offset ?? 0;
  const total = window ? Math.min(window.size, Math.max(0, size - base)) : size;
  const bytes: ImageBytes = {
    size: total,
    label,
    async read(offset: number, length: number): Promise<Buffer> {
      assertBoundedRead(bytes, length);
      const len = Math.max(0, Math.min(length, total - offset));
      if (offset < 0 || len === 0) return Buffer.alloc(0);
      const buf = Buffer.alloc(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, base + offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.subarray(0, got);
    },
  };
  return bytes;
}

/** A header that asks for more than any real structure is damaged (or hostile): refused, never allocated. */
function assertBoundedRead(bytes: ImageBytes, length: number): void {
  if (!(length <= MAX_HEADER_READ))
    throw corruptImage(
      bytes,
      `a header structure claims ${length} bytes, more than the ${MAX_HEADER_READ} any image header holds`,
    );
}

/** In-memory bytes (unit tests, and descriptors already read). */
export function bufferImageBytes(buf: Buffer, label = 'image'): ImageBytes {
  const bytes: ImageBytes = {
    size: buf.length,
    label,
    read: async (offset, length) => {
      assertBoundedRead(bytes, length);
      return buf.subarray(Math.max(0, offset), Math.max(0, Math.min(buf.length, offset + length)));
    },
  };
  return bytes;
}

/** Exactly `length` bytes or IMAGE_CORRUPT naming the structure: truncated images end here, not in a crash. */
export async function readExact(bytes: ImageBytes, offset: number, length: number, what: string): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > bytes.size) throw truncated(bytes, what, offset);
  const buf = await bytes.read(offset, length);
  if (buf.length < length) throw truncated(bytes, what, offset);
  return buf;
}

export function corruptImage(bytes: ImageBytes, problem: string, details: Record<string, unknown> = {}): MamoriError {
  return new MamoriError(
    'IMAGE_CORRUPT',
    `${bytes.label} is damaged: ${problem}; copy it again or export it again where it came from`,
    { details: { source: bytes.label, ...details } },
  );
}

function truncated(bytes: ImageBytes, what: string, offset: number): MamoriError {
  return corruptImage(
    bytes,
    `its ${what} at byte ${offset} lies past the end of the ${bytes.size}-byte image (truncated?)`,
    { offset },
  );
}
