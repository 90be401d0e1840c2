/**
 * bench/convert: conversion throughput against `qemu-img convert` of the same source in the same
 * run, and the inspection time of a 20 GiB image against virt-inspector (Debian libguestfs-tools,
 * run under TCG as shared/notes/fixtures.md says) when it is installed. Writes
 * bench/results/convert.json.
 */
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SiteProcess } from '../../test/harness/site-process.js';
import { gptUefiDebianSized } from '../../test/harness/disk-fixtures.js';
import { runProcess } from '../../src/core/run-process.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { median } from '../bench-common.js';

const ROUNDS = Number(process.env['BENCH_RUNS'] ?? 3);
const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
// Large enough that the copy, not mamori's fixed cost (node start, inspection, job, ~0.5 s), is what is compared.
const DISK = 8 * GiB;
const DATA = 4 * GiB;

/** An 8 GiB GPT disk holding 4 GiB of random data in runs of 16 MiB spread over it, as a VMDK. */
async function throughputSource(dir: string): Promise<string> {
  const raw = join(dir, 'data.img');
  await writeFile(raw, '');
  await truncate(raw, DISK);
  await runProcess('sfdisk', ['-q', raw], {
    input: 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"\n',
  });
  const fh = await open(raw, 'r+');
  try {
    const runs = DATA / (16 * MiB);
    for (let i = 0; i < runs; i++)
      await fh.write(randomBytes(16 * MiB), 0, 16 * MiB, 2 * MiB + i * Math.floor((DISK - 4 * MiB) / runs / MiB) * MiB);
  } finally {
    await fh.close();
  }
  const vmdk = join(dir, 'data.vmdk');
  await runProcess('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=monolithicSparse', raw, vmdk], {
    timeoutMs: 600_000,
  });
  await rm(raw);
  return vmdk;
}

/** Timed from a quiet disk: the previous copy's dirty pages are written back first, for both sides. */
async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  await runProcess('sync', []);
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

async function hasVirtInspector(): Promise<boolean> {
  return runProcess('virt-inspector', ['--version'], { timeoutMs: 30_000 }).then(
    () => true,
    () => false,
  );
}

const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-convert-'));
const site = await SiteProcess.create('site-a');
const samples = {
  mamoriMs: [] as number[],
  qemuImgMs: [] as number[],
  inspectMs: [] as number[],
  inspectInProcessMs: [] as number[],
  virtInspectorMs: [] as number[],
};
let virtInspector = false;
try {
  await site.start();
  const src = await throughputSource(dir);
  // Both sides are timed to durability: mamori's import fsyncs its copy (src/core/durable-sync.ts)
  // before it registers the disk, so the baseline is qemu-img convert followed by fsync of its
  // output (its own default never flushes). The order alternates, so drift in the disk's speed
  // falls on both sides alike.
  const ourRound = async (i: number): Promise<void> => {
    const m = await timed(() => site.cliJson('convert', src, '--name', `conv${i}`));
    samples.mamoriMs.push(m.ms);
    await site.cliJson('vm', 'delete', `conv${i}`);
    await site.cliJson('disk', 'delete', `conv${i}-disk0`);
  };
  const baselineRound = async (i: number): Promise<void> => {
    const out = join(dir, `plain${i}.qcow2`);
    samples.qemuImgMs.push(
      (
        await timed(async () => {
          await runProcess('qemu-img', ['convert', '-f', 'vmdk', '-O', 'qcow2', src, out], { timeoutMs: 600_000 });
          await runProcess('sync', [out], { timeoutMs: 600_000 });
        })
      ).ms,
    );
    await rm(out);
  };
  for (let i = 0; i < ROUNDS; i++) {
    if (i % 2 === 0) {
      await ourRound(i);
      await baselineRound(i);
    } else {
      await baselineRound(i);
      await ourRound(i);
    }
    process.stderr.write(
      `round ${i + 1}/${ROUNDS}: mamori convert ${Math.round(samples.mamoriMs.at(-1)!)} ms, qemu-img convert + fsync ${Math.round(samples.qemuImgMs.at(-1)!)} ms\n`,
    );
  }
  await rm(src);

  // Inspection of a 20 GiB image: metadata only, whatever the size.
  const efi = join(dir, 'BOOTX64.EFI');
  await writeFile(efi, Buffer.concat([Buffer.from('MZ'), Buffer.alloc(4096)]));
  const big = await gptUefiDebianSized(dir, efi, 20 * GiB);
  const bigQcow2 = join(dir, 'big.qcow2');
  await runProcess('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', big, bigQcow2], { timeoutMs: 600_000 });
  await rm(big);
  virtInspector = await hasVirtInspector();
  for (let i = 0; i < ROUNDS; i++) {
    const r = await timed(() =>
      runProcess(process.execPath, [join(repoRoot, 'bin', 'mamori'), '--json', 'inspect', bigQcow2], {
        timeoutMs: 120_000,
      }),
    );
    samples.inspectMs.push(r.ms);
    samples.inspectInProcessMs.push((JSON.parse(r.value.stdout) as { durationMs: number }).durationMs);
    if (virtInspector) {
      const v = await timed(() =>
        runProcess('virt-inspector', ['--no-applications', '--no-icon', '--format=qcow2', '-a', bigQcow2], {
          timeoutMs: 600_000,
          env: { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' },
        }),
      );
      samples.virtInspectorMs.push(v.ms);
    }
    process.stderr.write(
      `inspect 20 GiB: mamori ${Math.round(samples.inspectMs.at(-1)!)} ms${virtInspector ? `, virt-inspector ${Math.round(samples.virtInspectorMs.at(-1)!)} ms` : ''}\n`,
    );
  }
} finally {
  for (const pid of await site.vmPids()) site.trackPid(pid);
  await site.destroy();
  await rm(dir, { recursive: true, force: true });
}

const r3 = (x: number): number => Number(x.toFixed(3));
const mibps = (ms: number): number => r3(DATA / MiB / (ms / 1000));
const ours = mibps(median(samples.mamoriMs));
const plain = mibps(median(samples.qemuImgMs));
const inspectS = r3(median(samples.inspectMs) / 1000);
const virt = samples.virtInspectorMs.length > 0 ? r3(median(samples.virtInspectorMs) / 1000) : null;
const result = {
  name: 'convert',
  machine: '2 cores, TCG',
  date: new Date().toISOString(),
  rounds: ROUNDS,
  source: { format: 'vmdk monolithicSparse', diskBytes: DISK, dataBytes: DATA },
  samples,
  notes:
    'mamori is timed as the whole `mamori convert` CLI call (node start, inspection through qemu-nbd, the copy job flushed to disk, the VM registered); ' +
    'the baseline is `qemu-img convert -f vmdk -O qcow2` followed by fsync of the output, in alternating order; both read the same source from the page cache or disk alike',
  figures: [
    {
      metric: 'convert_throughput_vs_qemu_img',
      value: ours,
      unit: 'MiB/s',
      baseline: plain,
      ratio: r3(ours / plain),
      goal: 'ratio >= 0.95',
      met: ours / plain >= 0.95,
    },
    {
      metric: 'inspect_20gib_seconds',
      value: inspectS,
      unit: 's',
      baseline: null,
      ratio: null,
      goal: 'value < 1 s (whole CLI call, qemu-nbd start included)',
      met: inspectS < 1,
    },
    {
      metric: 'inspect_vs_virt_inspector',
      value: inspectS,
      unit: 's',
      baseline: virt,
      ratio: virt !== null ? r3(inspectS / virt) : null,
      goal: virt !== null ? 'report' : 'report (virt-inspector is not installed here: make bench-deps)',
      met: null,
    },
  ],
};
await writeFile(join(repoRoot, 'bench', 'results', 'convert.json'), `${JSON.stringify(result, null, 2)}\n`);
for (const f of result.figures) process.stdout.write(`${JSON.stringify(f)}\n`);
