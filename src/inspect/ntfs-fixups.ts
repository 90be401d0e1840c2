import { unreadable } from './ntfs-errors.js';
import { isPowerOfTwo } from './ntfs-integers.js';

// ---------------------------------------------------------------------------------------------
// Multi-sector records (MFT records, index blocks) carry an update sequence: the last two bytes
// of every 512-byte stride are replaced on disk by a check value and the originals live in the
// update sequence array. A stride whose check value differs was torn or damaged.

export function applyFixups(raw: Buffer, magic: string, what: string, volumeOffset: number): Buffer {
  const buf = Buffer.from(raw); // a copy: the reader may hand out views of its own memory
  if (buf.toString('latin1', 0, 4) !== magic) {
    const found = buf.toString('latin1', 0, 4);
    unreadable(
      `${what} lacks its "${magic}" signature${found === 'BAAD' ? ' (chkdsk marked it bad)' : ''}`,
      volumeOffset,
    );
  }
  const usaOffset = buf.readUInt16LE(4);
  const usaCount = buf.readUInt16LE(6);
  const strides = usaCount - 1;
  const stride = strides > 0 ? buf.length / strides : 0;
  if (
    strides < 1 ||
    !isPowerOfTwo(stride) ||
    stride < 256 ||
    usaOffset % 2 !== 0 ||
    usaOffset < 8 ||
    usaOffset + 2 * usaCount > buf.length
  ) {
    unreadable(`${what} has an invalid update sequence array (offset ${usaOffset}, count ${usaCount})`, volumeOffset);
  }
  const check = buf.readUInt16LE(usaOffset);
  for (let i = 1; i <= strides; i++) {
    const tail = i * stride - 2;
    if (buf.readUInt16LE(tail) !== check) {
      unreadable(
        `${what} fails its update sequence check in sector ${i - 1} (torn write or damage)`,
        volumeOffset + tail,
      );
    }
    buf.writeUInt16LE(buf.readUInt16LE(usaOffset + 2 * i), tail);
  }
  return buf;
}
