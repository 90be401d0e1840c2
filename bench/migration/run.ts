/**
 * bench/migration: live migration between two sites on this host (loopback), of an idle test
 * guest (it only beats) and of one writing its log, against QEMU's own migration driven by
 * hand through QMP in the same run (bench/migration/qemu-by-hand.ts), rounds alternating.
 * Then the disk bytes of a replica-aware migration (its final replication cycle, paused delta
 * copy and mirror together) against the data the guest changed since the replica's newest point
 * (and against a full mirror of the same VM). Writes
 * bench/results/migration.json.
 */
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SiteProcess } from '../../test/harness/site-process.js';
import { HostService } from '../../src/host/host-service.js';
import { createLogger } from '../../src/core/logger.js';
import { parseSerialAcks } from '../../src/guest/serial-log.js';
import { WL_RECORD_SIZE } from '../../src/guest/writelog-format.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import type { VmView } from '../../src/vms/vm-service.js';
import type { Job } from '../../src/jobs/job-journal.js';
import type { MigrationResult } from '../../src/migration/outgoing-migration.js';
import { migrateByHand, type ByHandResult } from './qemu-by-hand.js';
import { median, waitFor } from '../bench-common.js';

/** Between polls: each is a CLI process. */
const POLL_MS = 1_000;

const ROUNDS = Number(process.env['BENCH_RUNS'] ?? 3);
/**
 * BENCH_ONLY=replica-aware: only the replica-aware migration; its sample and figures replace
 * theirs in the committed migration.json, every other row stays as it was measured.
 */
const ONLY_REPLICA_AWARE = process.env['BENCH_ONLY'] === 'replica-aware';
/** The guest is paused once more, before the RAM copy, while the changes since the point cross: held to QEMU's default downtime limit. */
const EXTRA_PAUSE_BOUND_MS = 300;
const DATA = 256 * 1024 * 1024;
const WRITE_RATE = 50;
const SETTLE_MS = 3_000;
const CHANGE_WINDOW_MS = Number(process.env['BENCH_CHANGE_WINDOW_S'] ?? 20) * 1000;

async function bootAtA(a: SiteProcess, name: string, writing: boolean): Promise<VmView> {
  await a.cliJson(
    'vm',
    'create',
    name,
    '--test-guest',
    '--data-disk',
    String(DATA),
    ...(writing ? ['--writelog-rate', String(WRITE_RATE)] : ['--no-writelog']),
  );
  await a.cliJson('vm', 'start', name);
  await waitFor(
    `${name}'s heartbeat`,
    async () => (await a.cliJson<VmView>('vm', 'show', name)).lastHeartbeatAt ?? undefined,
    180_000,
    POLL_MS,
  );
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return a.cliJson<VmView>('vm', 'show', name);
}

async function migrate(a: SiteProcess, name: string): Promise<MigrationResult> {
  const r = await a.cli('vm', 'migrate', name, '--to', 'site-b', '--json');
  if (r.code !== 0) throw new Error(`migrating ${name}: ${r.stderr}${r.stdout.slice(0, 2000)}`);
  return (JSON.parse(r.stdout) as Job & { result: MigrationResult }).result;
}

async function mamoriRound(a: SiteProcess, b: SiteProcess, name: string, writing: boolean): Promise<MigrationResult> {
  await bootAtA(a, name, writing);
  const result = await migrate(a, name);
  await b.cliJson('vm', 'delete', name, '--force');
  return result;
}

const host = new HostService({ siteName: 'bench', log: createLogger({ level: 'silent' }) });
const guest = await host.testGuest();
const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-migration-'));
const a = await SiteProcess.create('site-a');
const b = await SiteProcess.create('site-b');
const samples = {
  idle: { mamori: [] as MigrationResult[], qemu: [] as ByHandResult[], qemuTls: [] as ByHandResult[] },
  writing: { mamori: [] as MigrationResult[], qemu: [] as ByHandResult[], qemuTls: [] as ByHandResult[] },
};
let replicaAware: {
  diskBytes: number;
  finalSyncBytes: number;
  changedBytes: number;
  records: number;
  fullMirrorBytes: number;
  deltaPauseMs: number | null;
} | null = null;
try {
  await a.start();
  await b.start();
  await a.cliJson('site', 'pair', b.url, '--token', await b.adminToken());
  await b.cliJson('site', 'pair', a.url, '--token', await a.adminToken());
  const info = await a.cliJson<{
    accelerator: { accel: 'kvm' | 'tcg' };
    machineTypes: { name: string; alias?: string }[];
  }>('host', 'info');
  const accel = info.accelerator.accel;
  const machineType = info.machineTypes.find((m) => m.alias === 'q35')?.name ?? 'q35';
  const byHand = (i: number, writing: boolean, tls: boolean): Promise<ByHandResult> =>
    migrateByHand({
      work: join(dir, `byhand-${writing ? 'w' : 'i'}${tls ? 't' : ''}${i}`),
      guest,
      accel,
      machineType,
      dataBytes: DATA,
      writelogRate: writing ? WRITE_RATE : null,
      settleMs: SETTLE_MS,
      tls,
    });
  for (let i = 0; i < (ONLY_REPLICA_AWARE ? 0 : ROUNDS); i++) {
    for (const writing of [false, true]) {
      const kind = writing ? 'writing' : 'idle';
      const runMamori = async (): Promise<void> =>
        void samples[kind].mamori.push(await mamoriRound(a, b, `${kind}${i}`, writing));
      const runQemu = async (): Promise<void> => void samples[kind].qemu.push(await byHand(i, writing, false));
      // Not a figure: QEMU by hand with TLS on both streams too, to tell TLS's share from mamori's.
      const runQemuTls = async (): Promise<void> => void samples[kind].qemuTls.push(await byHand(i, writing, true));
      const order = i % 2 === 0 ? [runQemu, runMamori, runQemuTls] : [runQemuTls, runMamori, runQemu];
      for (const run of order) await run();
      const m = samples[kind].mamori.at(-1)!;
      const q = samples[kind].qemu.at(-1)!;
      const t = samples[kind].qemuTls.at(-1)!;
      process.stderr.write(
        `round ${i + 1}/${ROUNDS} ${kind}: mamori downtime ${m.downtimeMs} ms total ${m.totalMs} ms; ` +
          `qemu by hand ${q.downtimeMs} ms / ${q.totalMs} ms; with TLS ${t.downtimeMs} ms / ${t.totalMs} ms\n`,
      );
    }
  }

  // Replica-aware: the guest writes for CHANGE_WINDOW_MS after the replica's newest point (as it
  // would between two cycles); what must cross is what it wrote from that point to the switchover.
  await bootAtA(a, 'ra', true);
  await a.cliJson('replicate', 'enable', 'ra', '--to', 'site-b', '--rpo', '1h');
  await waitFor(
    'the first point',
    async () => (await a.cliJson<{ lastPointAt: string | null }>('replicate', 'status', 'ra')).lastPointAt ?? undefined,
    600_000,
    POLL_MS,
  );
  await new Promise((r) => setTimeout(r, CHANGE_WINDOW_MS));
  // The newest point's own log (read at site-b), i.e. the last record the replica holds.
  const atPoint = (await a.cliJson<{ report: { lastSequence: number } }>('replicate', 'verify', 'ra')).report;
  const source = await a.cliJson<VmView>('vm', 'show', 'ra');
  // The move turns the VM at site-a into the seed of the reverse replication and removes its
  // runtime folder: its log is read through a handle opened before (an unlinked file stays readable).
  const sourceLog = await open(source.serialLog, 'r');
  const ra = await migrate(a, 'ra');
  if (!ra.replicaAware) throw new Error('the migration onto the replica was not replica-aware');
  const there = await b.cliJson<VmView>('vm', 'show', 'ra');
  await waitFor(
    'writes at site-b',
    async () => (parseSerialAcks(await readFile(there.serialLog, 'utf8')).length > 0 ? true : undefined),
    60_000,
    POLL_MS,
  );
  // The first record acknowledged at site-b was written after the switchover; all before it were written at site-a.
  const firstAtB = parseSerialAcks(await readFile(there.serialLog, 'utf8'))[0]!;
  const lastAtA = Math.max(...parseSerialAcks(await sourceLog.readFile('utf8')));
  await sourceLog.close();
  const seqAtSwitch = Math.max(lastAtA, firstAtB - 1);
  const records = seqAtSwitch - atPoint.lastSequence;
  replicaAware = {
    diskBytes: ra.diskBytes,
    finalSyncBytes: ra.finalSyncBytes,
    changedBytes: records * WL_RECORD_SIZE,
    records,
    deltaPauseMs: ra.deltaPauseMs,
    fullMirrorBytes: ONLY_REPLICA_AWARE
      ? (await previousResult()).samples.replicaAware.fullMirrorBytes
      : median(samples.writing.mamori.map((s) => s.diskBytes)),
  };
  process.stderr.write(
    `replica-aware: ${ra.diskBytes} disk bytes for ${records} records (${records * WL_RECORD_SIZE} bytes) changed since the point; extra pause ${ra.deltaPauseMs} ms\n`,
  );
} finally {
  for (const s of [a, b]) {
    for (const pid of await s.vmPids()) s.trackPid(pid);
    await s.destroy();
  }
  await rm(dir, { recursive: true, force: true });
}

async function previousResult(): Promise<
  { samples: { replicaAware: { fullMirrorBytes: number } }; figures: { metric: string }[] } & Record<string, unknown>
> {
  return JSON.parse(await readFile(join(repoRoot, 'bench', 'results', 'migration.json'), 'utf8')) as never;
}

const ra = replicaAware!;
const perChanged = ra.diskBytes / ra.changedBytes;
const r3 = (x: number): number => Number(x.toFixed(3));
const pauseMs = ra.deltaPauseMs ?? NaN;
const replicaAwareFigures = [
  {
    metric: 'replica_aware_disk_bytes_per_changed_byte',
    value: r3(perChanged),
    unit: 'B/B',
    baseline: r3(ra.fullMirrorBytes / ra.changedBytes),
    ratio: r3(ra.diskBytes / ra.fullMirrorBytes),
    goal: 'value <= 1.2 (baseline: a full mirror of the same VM, per changed byte)',
    met: perChanged <= 1.2,
  },
  {
    // Paid on top of the switchover's downtime: the guest is stopped while the blocks changed
    // since the replica's point are copied and the mirror is started, then continued.
    metric: 'replica_aware_extra_pause_ms',
    value: pauseMs,
    unit: 'ms',
    baseline: EXTRA_PAUSE_BOUND_MS,
    ratio: r3(pauseMs / EXTRA_PAUSE_BOUND_MS),
    goal: `value <= ${EXTRA_PAUSE_BOUND_MS} ms (QEMU's default downtime limit; a pause before the RAM copy, apart from the switchover's downtime)`,
    met: pauseMs <= EXTRA_PAUSE_BOUND_MS,
  },
];
const replicaAwareMetrics = new Set(replicaAwareFigures.map((f) => f.metric));

if (ONLY_REPLICA_AWARE) {
  // Only this part's rows change; the rest keeps the run that measured it (its date stays too).
  const prev = await previousResult();
  const merged = {
    ...prev,
    replicaAwareDate: new Date().toISOString(),
    samples: { ...(prev['samples'] as object), replicaAware: ra },
    // measuredAt: bench/README.md dates these rows by it rather than by the file's older date.
    figures: [
      ...prev.figures.filter((f) => !replicaAwareMetrics.has(f.metric)),
      ...replicaAwareFigures.map((f) => ({ ...f, measuredAt: new Date().toISOString() })),
    ],
  };
  await writeFile(join(repoRoot, 'bench', 'results', 'migration.json'), `${JSON.stringify(merged, null, 2)}\n`);
  for (const f of replicaAwareFigures) process.stdout.write(`${JSON.stringify(f)}\n`);
  process.exit(0);
}

const med = (xs: { downtimeMs: number | null; totalMs: number }[], k: 'downtimeMs' | 'totalMs'): number =>
  median(xs.map((x) => x[k] ?? NaN));
const idleDown = med(samples.idle.mamori, 'downtimeMs');
const idleDownQ = med(samples.idle.qemu, 'downtimeMs');
const writeDown = med(samples.writing.mamori, 'downtimeMs');
const writeDownQ = med(samples.writing.qemu, 'downtimeMs');
const idleTotal = med(samples.idle.mamori, 'totalMs');
const idleTotalQ = med(samples.idle.qemu, 'totalMs');
const withTls = {
  downtimeIdleMs: med(samples.idle.qemuTls, 'downtimeMs'),
  downtimeWritingMs: med(samples.writing.qemuTls, 'downtimeMs'),
  totalIdleMs: med(samples.idle.qemuTls, 'totalMs'),
  totalWritingMs: med(samples.writing.qemuTls, 'totalMs'),
};
const result = {
  name: 'migration',
  machine: '2 cores, TCG, loopback',
  date: new Date().toISOString(),
  rounds: ROUNDS,
  guest: { memoryMiB: 256, dataDiskBytes: DATA, writingRecordsPerSec: WRITE_RATE, recordBytes: WL_RECORD_SIZE },
  samples: { ...samples, replicaAware: ra },
  qemuByHandWithTlsMedians: withTls,
  figures: [
    {
      metric: 'downtime_idle_ms',
      value: idleDown,
      unit: 'ms',
      baseline: 300,
      ratio: r3(idleDown / 300),
      goal: "value <= 300 ms (QEMU's default downtime limit)",
      met: idleDown <= 300,
    },
    {
      metric: 'downtime_writing_ms',
      value: writeDown,
      unit: 'ms',
      baseline: writeDownQ,
      ratio: r3(writeDown / writeDownQ),
      goal: 'report (baseline: QEMU by hand, same guest)',
      met: null,
    },
    {
      metric: 'downtime_idle_vs_qemu',
      value: idleDown,
      unit: 'ms',
      baseline: idleDownQ,
      ratio: r3(idleDown / idleDownQ),
      goal: 'report',
      met: null,
    },
    {
      metric: 'total_time_vs_qemu',
      value: idleTotal,
      unit: 'ms',
      baseline: idleTotalQ,
      ratio: r3(idleTotal / idleTotalQ),
      goal: 'report (idle guest; mamori adds TLS, the journal and the destination VM record)',
      met: null,
    },
    ...replicaAwareFigures,
  ],
};
await writeFile(join(repoRoot, 'bench', 'results', 'migration.json'), `${JSON.stringify(result, null, 2)}\n`);
for (const f of result.figures) process.stdout.write(`${JSON.stringify(f)}\n`);
