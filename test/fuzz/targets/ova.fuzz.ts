import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import { listTarMembers } from '../../../src/convert/ova-archive.js';
import { tarArchives } from '../fuzz-fixtures.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { exactSizes } from '../invariants.js';
import { bufferInputs, describeBuffer, type BufferInput, type BufferSeed } from './buffer-target.js';

/** listTarMembers reads a path: each input is written to this one file first. */
const scratch = join(tmpdir(), `mamori-fuzz-ova-${process.pid}-${threadId}.ova`);

/** OVAs (ustar from writeTar, GNU tar with 'L' long names, pax): the headers, their checksums, sizes and extended records. */
export const ovaTarget: FuzzTarget<BufferSeed, BufferInput> = {
  name: 'ova',
  async seeds() {
    // Headers and pax/GNU records are where the parser looks; the members' data is mostly filler.
    return (await tarArchives()).map((t) => ({ name: t.name, bytes: t.image, hot: headerBlocks(t.image) }));
  },
  inputs: (seeds) => bufferInputs(seeds, { stream: true }),
  async run(input) {
    await writeFile(scratch, input.bytes);
    try {
      for (const m of await listTarMembers(scratch)) {
        exactSizes(`member ${m.name}`, { offset: m.offset, size: m.size });
        if (m.offset + m.size > input.bytes.length)
          throw new TypeError(
            `member ${m.name} ends at ${m.offset + m.size}, past the ${input.bytes.length}-byte archive`,
          );
      }
    } finally {
      // Removed after every input: a worker thread ended by the runner runs no exit handlers.
      await rm(scratch, { force: true });
    }
  },
  describe: describeBuffer,
};

/** The 512-byte blocks that look like tar headers (ustar magic at 257) and the block after each (long names, pax records). */
function headerBlocks(tar: Buffer): { start: number; length: number }[] {
  const out: { start: number; length: number }[] = [];
  for (let at = 0; at + 512 <= tar.length; at += 512) {
    if (tar.toString('latin1', at + 257, at + 262) === 'ustar') out.push({ start: at, length: 1024 });
  }
  return out;
}
