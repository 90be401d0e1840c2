/**
 * bench/recovery: the RTO of a 20-VM recovery plan in two priority groups (a test recovery:
 * overlays on the replicas, so each round starts from the same images), against a shell
 * script that starts the same 20 VMs from the same replica point images with the same
 * parallelism (bench/recovery/plain-start.sh), in the same run. Both are timed from their
 * start to the last VM's first heartbeat. Writes bench/results/recovery.json.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SiteProcess } from '../../test/harness/site-process.js';
import { HostService } from '../../src/host/host-service.js';
import { createLogger } from '../../src/core/logger.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import type { PlanRun } from '../../src/plans/run-journal.js';
import Database from 'better-sqlite3';
import { median, waitFor } from '../bench-common.js';

/** Between polls: each is a CLI process, and CPU taken from booting guests is charged to mamori (see bench/README.md). */
const POLL_MS = 5_000;

const VMS = Number(process.env['BENCH_VMS'] ?? 20);
const ROUNDS = Number(process.env['BENCH_RUNS'] ?? 2);
const PARALLEL = Number(process.env['BENCH_PARALLEL'] ?? 4);
const names = Array.from({ length: VMS }, (_, i) => `r${String(i + 1).padStart(2, '0')}`);
const groups = [names.slice(0, VMS / 2), names.slice(VMS / 2)];

/** The newest point's image of each VM's replica at site-b, by VM name (from its database and manifests). */
async function pointFiles(b: SiteProcess): Promise<Map<string, string>> {
  const db = new Database(join(b.dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
  const rows = db.prepare('SELECT id, vm_name AS name FROM replicas').all() as { id: string; name: string }[];
  db.close();
  const out = new Map<string, string>();
  for (const r of rows) {
    const dir = join(b.dataDir, 'replicas', r.id, 'disk0');
    const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { points: { file: string }[] };
    out.set(r.name, join(dir, m.points.at(-1)!.file));
  }
  return out;
}

async function plainRound(
  dir: string,
  guest: { kernel: string; initrd: string },
  points: Map<string, string>,
): Promise<number> {
  const work = await mkdtemp(join(dir, 'plain-'));
  const args = [
    work,
    guest.kernel,
    guest.initrd,
    String(PARALLEL),
    ...groups.map((g) => g.map((n) => `${n}=${points.get(n)}`).join(',')),
  ];
  const t0 = Date.now();
  const child = spawn(join(repoRoot, 'bench', 'recovery', 'plain-start.sh'), args, {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  const ms = Date.now() - t0;
  // Stop exactly the QEMUs the script started, by their pid files.
  for (const f of (await readdir(work)).filter((x) => x.endsWith('.pid'))) {
    const pid = Number((await readFile(join(work, f), 'utf8')).trim());
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  await new Promise((r) => setTimeout(r, 1000));
  await rm(work, { recursive: true, force: true });
  if (code !== 0) throw new Error(`plain-start.sh exited ${code}`);
  return ms;
}

async function mamoriRound(b: SiteProcess): Promise<number> {
  const r = await b.cli('plan', 'run', 'bench-plan', '--mode', 'test', '--no-wait', '--json');
  if (r.code !== 0) throw new Error(r.stderr);
  const id = (JSON.parse(r.stdout) as PlanRun).id;
  const run = await waitFor(
    'the plan run',
    async () => {
      const x = await b.cliJson<PlanRun>('plan', 'report', id, '--json');
      return x.state === 'done' || x.state === 'cancelled' ? x : undefined;
    },
    1_800_000,
    POLL_MS,
  );
  if (run.result !== 'success')
    throw new Error(`plan run ${id}: ${run.result}: ${JSON.stringify(run.steps.filter((s) => s.state !== 'done'))}`);
  const rto = Math.max(...Object.values(run.vms).map((v) => v.rtoSec ?? Infinity)) * 1000;
  const clean = await b.cli('plan', 'run', 'bench-plan', '--mode', 'cleanup');
  if (clean.code !== 0) throw new Error(clean.stderr);
  return rto;
}

const guest = await new HostService({ siteName: 'bench', log: createLogger({ level: 'silent' }) }).testGuest();
const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-recovery-'));
const a = await SiteProcess.create('site-a');
const b = await SiteProcess.create('site-b');
const ours: number[] = [];
const plain: number[] = [];
try {
  await a.start();
  await b.start();
  await a.cliJson('site', 'pair', b.url, '--token', await b.adminToken());
  await b.cliJson('site', 'pair', a.url, '--token', await a.adminToken());
  // The protected VMs need not run: their replicas are what both sides start from.
  for (const n of names) {
    await a.cliJson('vm', 'create', n, '--test-guest', '--data-disk', '16M', '--writelog-rate', '1');
    await a.cliJson('replicate', 'enable', n, '--to', 'site-b', '--rpo', '1h');
  }
  for (const n of names)
    await waitFor(
      `${n}'s first point`,
      async () => (await a.cliJson<{ lastPointAt: string | null }>('replicate', 'status', n)).lastPointAt ?? undefined,
      600_000,
      POLL_MS,
    );
  await a.cliJson('group', 'create', 'bench', ...names.flatMap((n) => ['--vm', n]));
  await b.cliJson('network', 'create', 'benchtest', '--isolated');
  await b.cliJson('mapping', 'set', '--peer', 'site-a', 'network', 'user', 'user', '--test', 'benchtest');
  await b.cliJson('mapping', 'set', '--peer', 'site-a', 'pool', 'default', 'default');
  const yaml = [
    'name: bench-plan',
    'protectionGroups: [bench]',
    `concurrency: ${PARALLEL}`,
    'vms:',
    ...groups.flatMap((g, p) => g.map((n) => `  ${n}: { priority: ${p + 1}, waitHeartbeat: 600s }`)),
  ].join('\n');
  await writeFile(join(dir, 'plan.yaml'), `${yaml}\n`);
  await b.cliJson('plan', 'apply', join(dir, 'plan.yaml'));
  const points = await pointFiles(b);
  for (let i = 0; i < ROUNDS; i++) {
    if (i % 2 === 0) {
      plain.push(await plainRound(dir, guest, points));
      ours.push(await mamoriRound(b));
    } else {
      ours.push(await mamoriRound(b));
      plain.push(await plainRound(dir, guest, points));
    }
    process.stderr.write(`round ${i + 1}/${ROUNDS}: plain ${plain.at(-1)} ms, mamori ${ours.at(-1)} ms\n`);
  }
} finally {
  // The isolated network's bridge lives in this namespace: remove it through the site.
  await b.cli('plan', 'run', 'bench-plan', '--mode', 'cleanup').catch(() => undefined);
  await b.cli('network', 'delete', 'benchtest').catch(() => undefined);
  for (const s of [a, b]) {
    for (const pid of await s.vmPids()) s.trackPid(pid);
    await s.destroy();
  }
  await rm(dir, { recursive: true, force: true });
}
const ratio = median(ours) / median(plain);
const result = {
  name: 'recovery',
  machine: '2 cores, TCG',
  date: new Date().toISOString(),
  rounds: ROUNDS,
  vms: VMS,
  parallel: PARALLEL,
  samples: { mamoriRtoMs: ours, plainQemuMs: plain },
  figures: [
    {
      metric: 'rto_20_vms_vs_plain_qemu',
      value: Math.round(median(ours)),
      unit: 'ms',
      baseline: Math.round(median(plain)),
      ratio: Number(ratio.toFixed(3)),
      goal: 'ratio <= 1.2',
      met: ratio <= 1.2,
    },
  ],
};
await writeFile(join(repoRoot, 'bench', 'results', 'recovery.json'), `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(result.figures[0])}\n`);
