import { RegistryHive } from '../../../src/inspect/registry-hive.js';
import { fromHives } from '../../../src/inspect/windows-release.js';
import { windowsHives } from '../fuzz-fixtures.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { bufferInputs, describeBuffer, type BufferInput, type BufferSeed } from './buffer-target.js';

/** The hive's records after the base block: where keys, values and lists are. */
const RECORDS = [
  { start: 0, length: 0x200 },
  { start: 4096, length: 1 << 20 },
];

/** A mutated hive read as windowsRelease reads SOFTWARE and SYSTEM, plus a value of every type. */
export const registryHiveTarget: FuzzTarget<BufferSeed, BufferInput> = {
  name: 'registry-hive',
  async seeds() {
    const { software, system } = await windowsHives();
    return [
      { name: 'SOFTWARE', bytes: software, hot: RECORDS },
      { name: 'SYSTEM', bytes: system, hot: RECORDS },
    ];
  },
  inputs: (seeds) => bufferInputs(seeds, { maxOps: 4 }),
  async run(input) {
    const { software, system } = await windowsHives();
    // The checksum covers the base block only: damage to the records (most mutations) is read on.
    const hive = RegistryHive.parse(input.bytes, input.seed.name);
    const clean = RegistryHive.parse(input.seed.name === 'SOFTWARE' ? system : software, 'other');
    if (input.seed.name === 'SOFTWARE') {
      fromHives(hive, clean, '/Windows');
      hive.value('Microsoft\\Windows NT\\CurrentVersion', 'Blob');
      hive.value('Microsoft\\Windows NT\\CurrentVersion', 'Multi');
      hive.subkeys('');
    } else {
      fromHives(clean, hive, '/Windows');
      hive.subkeys('ControlSet001\\Services');
    }
  },
  describe: describeBuffer,
};
