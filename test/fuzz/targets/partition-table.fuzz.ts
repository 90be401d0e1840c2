import { readPartitionTable } from '../../../src/inspect/partition-table.js';
import { inspectDisk } from '../../../src/inspect/inspector.js';
import type { ByteReader } from '../../../src/inspect/byte-reader.js';
import { partitionedDisks } from '../fuzz-fixtures.js';
import { diskTarget } from './disk-target.js';

/** MBR (with extended and logical partitions) and GPT (primary and backup header), then the whole inspection over them. */
async function exercise(r: ByteReader): Promise<void> {
  await readPartitionTable(r);
  await inspectDisk(r);
}

export const partitionTableTarget = diskTarget('partition-table', partitionedDisks, exercise);
