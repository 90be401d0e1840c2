/**
 * bench/vm-start: time from `mamori vm start` to the guest's first heartbeat, against the
 * same guest started by a plain qemu-system-x86_64 command line in the same run.
 * Both are timed the same way: from the command's start to the first `mamori-hb` line in
 * the serial log file, polled every 10 ms. Writes bench/results/vm-start.json.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SiteProcess } from '../../test/harness/site-process.js';
import { HostService } from '../../src/host/host-service.js';
import { createLogger } from '../../src/core/logger.js';
import { runProcess } from '../../src/core/run-process.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { median } from '../bench-common.js';

const RUNS = Number(process.env['BENCH_RUNS'] ?? 9);

async function firstHeartbeat(serialLog: string, t0: number, timeoutMs = 120_000): Promise<number> {
  while (Date.now() - t0 < timeoutMs) {
    const text = await readFile(serialLog, 'utf8').catch(() => '');
    if (/^mamori-hb /m.test(text)) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no heartbeat in ${serialLog} within ${timeoutMs} ms`);
}

async function plainQemuRun(dir: string, guest: { kernel: string; initrd: string }, i: number): Promise<number> {
  const disk = join(dir, `plain-${i}.qcow2`);
  const serial = join(dir, `plain-${i}.log`);
  await runProcess('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'cluster_size=131072,extended_l2=on',
    disk,
    '64M',
  ]);
  const t0 = Date.now();
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-machine',
      'q35',
      '-accel',
      'tcg',
      '-smp',
      '1',
      '-m',
      '256M',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-chardev',
      `file,id=serial0,path=${serial}`,
      '-device',
      'isa-serial,chardev=serial0',
      '-drive',
      `file=${disk},format=qcow2,if=virtio`,
      '-netdev',
      'user,id=net0,restrict=on',
      '-device',
      'virtio-net-pci,netdev=net0',
      '-kernel',
      guest.kernel,
      '-initrd',
      guest.initrd,
      '-append',
      'console=ttyS0 panic=-1 quiet mamori.acpi=1 mamori.wl=/dev/vda mamori.wl_rate=10',
    ],
    { stdio: 'ignore' },
  );
  const exited = new Promise((r) => child.once('exit', r));
  try {
    return await firstHeartbeat(serial, t0);
  } finally {
    child.kill('SIGKILL');
    // The next run must not share the CPUs with a dying QEMU.
    await exited;
  }
}

async function mamoriRun(site: SiteProcess, i: number): Promise<number> {
  const name = `bench-${i}`;
  await site.cliJson('vm', 'create', name, '--test-guest', '--data-disk', '64M', '--writelog-rate', '10');
  const serial = (await site.cliJson<{ serialLog: string }>('vm', 'show', name)).serialLog;
  const t0 = Date.now();
  const started = site.cliJson<{ pid: number }>('vm', 'start', name);
  const ms = await firstHeartbeat(serial, t0);
  await started;
  await site.cliJson('vm', 'delete', name, '--force');
  return ms;
}

// The same kernel and initrd the site boots (it prefers the uncompressed PVH kernel).
const guest = await new HostService({ siteName: 'bench', log: createLogger({ level: 'silent' }) }).testGuest();
const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-'));
const site = await SiteProcess.create('bench');
const ours: number[] = [];
const plain: number[] = [];
try {
  await site.start();
  // Alternate the two, and which goes first, so drift in machine load hits both alike.
  for (let i = 0; i < RUNS; i++) {
    if (i % 2 === 0) {
      plain.push(await plainQemuRun(dir, guest, i));
      ours.push(await mamoriRun(site, i));
    } else {
      ours.push(await mamoriRun(site, i));
      plain.push(await plainQemuRun(dir, guest, i));
    }
    process.stderr.write(`run ${i + 1}/${RUNS}: plain ${plain.at(-1)} ms, mamori ${ours.at(-1)} ms\n`);
  }
} finally {
  await site.destroy();
  await rm(dir, { recursive: true, force: true });
}
const ratio = median(ours) / median(plain);
const result = {
  name: 'vm-start',
  machine: '2 cores, TCG',
  date: new Date().toISOString(),
  runs: RUNS,
  samples: { mamoriMs: ours, plainQemuMs: plain },
  figures: [
    {
      // value and baseline are medians (ms); ratio is ours over plain QEMU's, the figure that matters.
      metric: 'vm_start_to_heartbeat',
      value: median(ours),
      unit: 'ms',
      baseline: median(plain),
      ratio: Number(ratio.toFixed(3)),
      goal: 'ratio <= 1.10',
      met: ratio <= 1.1,
    },
  ],
};
await writeFile(join(repoRoot, 'bench', 'results', 'vm-start.json'), `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(result.figures[0])}\n`);
