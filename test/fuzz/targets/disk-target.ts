import { sliceReader, type ByteReader } from '../../../src/inspect/byte-reader.js';
import { describeDisk, diskInputs, diskReader, traceSeed, type DiskInput, type DiskSeed } from '../fuzz-disk.js';
import type { FuzzTarget } from '../fuzz-target.js';
import type { NamedImage } from '../fuzz-fixtures.js';

/**
 * A target over disk images: `exercise` reads a (mutated) image the way the inspector does;
 * the clean images must pass it, and what it reads of them is where mutations go first.
 * `partition`: the image is a filesystem, read through a partition view (sliceReader) as
 * the inspector reads it, so a filesystem that claims more than its partition reads past
 * the view's end, not the disk's.
 */
export function diskTarget(
  name: string,
  images: () => Promise<NamedImage[]>,
  exercise: (reader: ByteReader) => Promise<void>,
  opts: { partition?: boolean } = {},
): FuzzTarget<DiskSeed, DiskInput> {
  const view = (r: ByteReader): ByteReader => (opts.partition ? sliceReader(r, 0, r.size) : r);
  return {
    name,
    async seeds() {
      return Promise.all((await images()).map((i) => traceSeed(i.name, i.image, (r) => exercise(view(r)))));
    },
    inputs: (seeds) => diskInputs(seeds),
    run: (input, deadline) => exercise(view(diskReader(input, deadline))),
    describe: describeDisk,
  };
}
