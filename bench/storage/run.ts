/**
 * bench/storage: image disks against raw device mappings, as `mamori bench storage` measures
 * them inside a test guest (TCG here): a qcow2 image, a raw image, and a loop device over a
 * raw file of the same pool mapped in virtual mode (host page cache) and in physical mode
 * (O_DIRECT), all in one run. Sequential 1 MiB and random 4 KiB at queue depth 1, O_DIRECT in
 * the guest. Writes bench/results/storage.json: the four figures per disk kind, and each
 * RDM's figure over qcow2's as rdm_virtual_vs_qcow2_* and rdm_physical_vs_qcow2_*.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SiteProcess } from '../../test/harness/site-process.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { BENCH_KINDS, type StorageBenchResult } from '../../src/disks/storage-bench.js';

const MIB = Number(process.env['BENCH_STORAGE_MIB'] ?? 256);
const SECONDS = Number(process.env['BENCH_STORAGE_SECONDS'] ?? 5);
const METRICS = [
  ['seq_read_mbps', 'MB/s'],
  ['seq_write_mbps', 'MB/s'],
  ['rand_read_iops', 'IOPS'],
  ['rand_write_iops', 'IOPS'],
] as const;
const site = await SiteProcess.create('bench-storage');
try {
  await site.start();
  const r = await site.cliJson<StorageBenchResult>(
    'bench',
    'storage',
    '--mib',
    String(MIB),
    '--seconds',
    String(SECONDS),
  );
  const figures = [
    ...BENCH_KINDS.flatMap((k) =>
      METRICS.map(([m, unit]) => ({
        metric: m,
        disk: k,
        value: r.kinds[k][m],
        unit,
        baseline: null,
        ratio: '-',
        goal: 'informational',
        met: null,
      })),
    ),
    ...(['rdm-virtual', 'rdm-physical'] as const).flatMap((k) =>
      METRICS.map(([m, unit]) => ({
        metric: `${k.replace('-', '_')}_vs_qcow2_${m}`,
        disk: k,
        value: r.kinds[k][m],
        unit,
        baseline: r.kinds.qcow2[m],
        ratio: r.ratios[`${k.replace('-', '_')}_vs_qcow2_${m}`]!,
        goal: 'about 1 (informational)',
        met: null,
      })),
    ),
  ];
  const out = {
    name: 'storage',
    machine: '2 cores, TCG',
    date: new Date().toISOString(),
    mib: MIB,
    seconds: SECONDS,
    kinds: r.kinds,
    notes:
      'Measured inside the test guest under TCG, so CPU emulation bounds every figure; the comparison between kinds in one run is the point, not the absolute numbers. ' +
      'Images are attached with the host page cache (cache.direct off), as mamori attaches them; a physical-mode RDM bypasses it (O_DIRECT), a virtual-mode one does not.',
    figures,
  };
  await writeFile(join(repoRoot, 'bench', 'results', 'storage.json'), `${JSON.stringify(out, null, 2)}\n`);
  for (const f of figures) process.stdout.write(`${JSON.stringify(f)}\n`);
} finally {
  await site.destroy();
}
