import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buildVmArgv } from '../../src/qemu/vm-argv.js';
import type { VmArgvInput } from '../../src/qemu/vm-argv-input.js';
import { argvDisk, argvMachine } from '../../src/vms/vm-argv-mapping.js';
import type { VmDefinition } from '../../src/vms/vm-definition.js';
import type { DiskRecord } from '../../src/disks/disk-record.js';
import { repoRoot } from '../harness/repo-root.js';

/**
 * VM definition -> QEMU argv, as Proxmox's cfg2cmd tests: each case in
 * test/golden/vm-argv/NAME.json holds the input and the expected argv. A diff here is a
 * deliberate change: rerun with MAMORI_UPDATE_GOLDEN=1 and review the diff.
 */
const dir = join(repoRoot, 'test', 'golden', 'vm-argv');

for (const file of (await readdir(dir)).filter((f) => f.endsWith('.json')).sort()) {
  test(`golden argv: ${file}`, async () => {
    const golden = JSON.parse(await readFile(join(dir, file), 'utf8')) as { input: VmArgvInput; argv: string[] };
    const argv = buildVmArgv(golden.input);
    if (process.env['MAMORI_UPDATE_GOLDEN'] === '1') {
      await writeFile(join(dir, file), `${JSON.stringify({ ...golden, argv }, null, 2)}\n`);
      return;
    }
    assert.deepEqual(argv, golden.argv);
    // The inputs are whole VM and disk records: the mapping vms/ starts VMs with gives the same argv.
    const records = golden.input as unknown as { def: VmDefinition; disks: DiskRecord[] };
    assert.deepEqual(buildVmArgv({ ...golden.input, def: argvMachine(records.def), disks: records.disks.map(argvDisk) }), golden.argv);
  });
}
