import { readPartitionTable } from '../../../src/inspect/partition-table.js';
import { inspectDisk } from '../../../src/inspect/inspector.js';
import type { ByteReader } from '../../../src/inspect/byte-reader.js';
import { partitionedDisks } from '../fuzz-fixtures.js';
import { exactSizes } from '../invariants.js';
import { diskTarget } from './disk-target.js';

/** MBR (with extended and logical partitions) and GPT (primary and backup header), then the whole inspection over them. */
async function exercise(r: ByteReader): Promise<void> {
  const table = await readPartitionTable(r);
  for (const p of table.partitions)
    exactSizes(`partition ${p.number}`, { number: p.number, start: p.start, size: p.size });
  const report = await inspectDisk(r);
  for (const v of report.logicalVolumes) exactSizes(`logical volume ${v.vg}/${v.name}`, { size: v.size });
}

export const partitionTableTarget = diskTarget('partition-table', partitionedDisks, exercise);
