/**
 * bench/hundred's source site, run inside the near namespace of the emulated WAN (run.ts starts
 * it there): N paused QEMUs with a writer each, replicated by the product's SiteScheduler (its
 * CycleSchedule timers, SiteCycleQueue, PeerLinks budget and saturation check, with the real
 * ReplicationIncidents) and runReplicationCycle, to recovery-site.ts in the far namespace.
 * The replication rows live in memory instead of the site database, and the incident log
 * records what it is told; nothing else in the cycle path is a stand-in.
 *
 * Usage: node dist/bench/hundred/fleet.js CONFIG.json  (writes the result file the config names)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import type { IncidentLog } from '../../src/events/incident-log.js';
import { runProcess } from '../../src/core/run-process.js';
import { runReplicationCycle } from '../../src/replication/replication-cycle.js';
import { ReplicationIncidents } from '../../src/replication/replication-incidents.js';
import { SiteScheduler } from '../../src/replication/site-scheduler.js';
import type { ReplicationRepo } from '../../src/store/repos/replication-repo.js';
import type { CycleStats, ReplicationRecord } from '../../src/store/records/replica-record.js';
import type { PeerLink, PeerRecord } from '../../src/store/records/peer-record.js';
import { ensureSiteTls } from '../../src/sites/site-tls.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { PausedVm } from './paused-vm.js';
import { WanRecoverySite, WanReplica } from './wan-replica.js';

export interface FleetConfig {
  label: string;
  dir: string;
  /** The far namespace, where recovery-site.ts runs. */
  recoveryNs: string;
  host: string;
  port: number;
  vms: number;
  rpoMs: number;
  /** Per VM: one write of writeBytes every second. */
  writeBytes: number;
  bandwidth: string;
  /** The link's cycles in flight (`mamori site link --concurrency`); undefined: the product's default. */
  concurrency?: number;
  /** Seconds measured after every VM has its first point. */
  seconds: number;
  result: string;
}

const PEER = 'site-b';
const DISK = 1024 * 1024 * 1024;
/** Writes land in the first quarter of the disk, at random 64 KiB-aligned offsets. */
const REGION = DISK / 4;
const KEEP_STATS = 10;
const cfg = JSON.parse(await readFile(process.argv[2]!, 'utf8')) as FleetConfig;
const log = (s: string): void =>
  void process.stderr.write(`${new Date().toISOString().slice(11, 19)} [${cfg.label}] ${s}\n`);

// ---- the recovery site, across the WAN ----
const tlsB = join(cfg.dir, 'site-b-tls');
const siteB = await ensureSiteTls({ dir: tlsB, siteName: 'bench-b' });
const script = join(repoRoot, 'dist', 'bench', 'hundred', 'recovery-site.js');
const recoveryChild: ChildProcess = spawn(
  'ip',
  [
    'netns',
    'exec',
    cfg.recoveryNs,
    process.execPath,
    script,
    join(cfg.dir, 'recovery'),
    tlsB,
    cfg.host,
    String(cfg.port),
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const url = await new Promise<string>((resolve, reject) => {
  recoveryChild.once('exit', (code) => reject(new Error(`the recovery site exited (${code})`)));
  createInterface({ input: recoveryChild.stdout! }).once('line', (l) =>
    resolve((JSON.parse(l) as { url: string }).url),
  );
});
const site = new WanRecoverySite(url, siteB.caCertPem);

// ---- the VMs and their replication rows ----
const vms: PausedVm[] = [];
const rows = new Map<string, ReplicationRecord>();
const payload = join(cfg.dir, 'payload.bin');
await writeFile(payload, randomBytes(Math.max(cfg.writeBytes, 65536)));
const name = (i: number): string => `vm${String(i).padStart(3, '0')}`;

async function startVm(i: number): Promise<void> {
  const vdir = join(cfg.dir, name(i));
  await mkdir(vdir, { recursive: true });
  const image = join(vdir, 'disk0.qcow2');
  await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(DISK)]);
  vms[i] = await PausedVm.start(vdir, image);
  await site.call('PUT', `/replicas/${name(i)}`, { size: DISK });
  const now = new Date().toISOString();
  rows.set(name(i), {
    vmId: name(i),
    peer: PEER,
    replicaId: name(i),
    rpoMs: cfg.rpoMs,
    keepPoints: 24,
    state: 'enabled',
    generation: null,
    lastPointAt: null,
    lastPointId: null,
    failures: 0,
    lastError: null,
    stats: [],
    bandwidthBps: null,
    continuous: null,
    createdAt: now,
    updatedAt: now,
  });
}

// ---- what the bench records ----
interface CycleRecord {
  vm: string;
  startedAt: number;
  endedAt: number;
  ok: boolean;
  bytesSent: number;
  bytesChanged: number;
  /** Age of the VM's previous point when this one was committed (the most its lag reached). */
  lagBeforeMs: number | null;
  inFlightAtStart: number;
}
const cycles: CycleRecord[] = [];
const incidentEvents: { at: string; op: 'open' | 'update' | 'clear'; message?: string; details?: unknown }[] = [];
let inFlight = 0;
let maxInFlight = 0;

const incidentLog = {
  open: false,
  async raiseOrUpdate(input: { message: string; details?: Record<string, unknown> }) {
    const opened = !this.open;
    this.open = true;
    incidentEvents.push({ at: new Date().toISOString(), op: opened ? 'open' : 'update', ...input });
    log(`saturation incident ${opened ? 'opened' : 'updated'}: ${input.message.slice(0, 300)}`);
    return { incident: { id: 'evt-bench' }, opened };
  },
  async clear() {
    if (!this.open) return false;
    this.open = false;
    incidentEvents.push({ at: new Date().toISOString(), op: 'clear' });
    log('saturation incident cleared');
    return true;
  },
};
const quiet = pino({ level: 'silent' });
const incidents = new ReplicationIncidents({
  incidents: incidentLog as unknown as IncidentLog,
  log: quiet,
  row: async (id) => rows.get(id),
  vmName: async (id) => id,
});
const repo = {
  find: async (id: string) => rows.get(id),
  enabledVmIds: async () => [...rows.values()].filter((r) => r.state === 'enabled').map((r) => r.vmId),
} as unknown as ReplicationRepo;
let link: PeerLink = { bitsPerSecond: null, schedule: null, concurrency: null };
const peerRecord = (): PeerRecord => ({ name: PEER, link }) as unknown as PeerRecord;
const peers = {
  records: async () => [peerRecord()],
  record: async () => peerRecord(),
  setLink: async (_n: string, l: PeerLink) => void (link = l),
};

let scheduler: SiteScheduler | null = null;
async function runCycle(vmId: string): Promise<void> {
  const row = rows.get(vmId)!;
  const vm = vms[Number(vmId.slice(2))]!;
  const sender = scheduler!.sender(row);
  const startedAt = Date.now();
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  const rec: CycleRecord = {
    vm: vmId,
    startedAt,
    endedAt: 0,
    ok: false,
    bytesSent: 0,
    bytesChanged: 0,
    lagBeforeMs: null,
    inFlightAtStart: inFlight,
  };
  try {
    const res = await runReplicationCycle({
      source: { kind: 'live', qmp: vm.qmp, nodes: ['disk0'] },
      workDir: join(cfg.dir, vmId, 'work'),
      previousGeneration: row.generation,
      remote: new WanReplica(vmId, site),
      ...(sender ? { throttle: sender.throttle } : {}),
    });
    const now = Date.now();
    if (row.lastPointAt) rec.lagBeforeMs = now - Date.parse(row.lastPointAt);
    const stats: CycleStats = {
      at: res.point.time,
      mode: res.mode,
      bytesSent: res.bytesSent,
      bytesChanged: res.bytesChanged,
      durationMs: res.durationMs,
      throughputBps: res.durationMs > 0 ? Math.round((res.bytesSent * 1000) / res.durationMs) : 0,
    };
    Object.assign(row, {
      generation: res.generation,
      lastPointAt: res.point.time,
      lastPointId: res.point.id,
      failures: 0,
      lastError: null,
      stats: [...row.stats, stats].slice(-KEEP_STATS),
    });
    Object.assign(rec, { ok: true, bytesSent: res.bytesSent, bytesChanged: res.bytesChanged });
  } catch (e) {
    row.failures++;
    row.lastError = (e as Error).message;
    log(`cycle of ${vmId} failed: ${row.lastError}`);
  } finally {
    sender?.close();
    inFlight--;
    rec.endedAt = Date.now();
    cycles.push(rec);
    await scheduler!.fromRow(vmId, Date.now());
  }
}

// ---- writers: one write a second per VM, skipped (and counted) while the last one is pending ----
let written = 0;
let skipped = 0;
let writeErrors = 0;
let writing = true;
const busy = new Set<number>();
const writers: NodeJS.Timeout[] = [];
function startWriters(): void {
  const slots = REGION / 65536;
  vms.forEach((vm, i) => {
    const tick = (): void => {
      if (!writing) return;
      if (busy.has(i)) return void skipped++;
      busy.add(i);
      const off = Math.floor(Math.random() * slots) * 65536;
      vm.qemuIo(`write -q -s ${payload} ${off} ${cfg.writeBytes}`)
        .then(() => void (written += cfg.writeBytes))
        .catch(() => void writeErrors++)
        .finally(() => busy.delete(i));
    };
    // Spread over the second so the writes do not arrive as one burst of N.
    setTimeout(() => writers.push(setInterval(tick, 1000)), Math.floor((1000 * i) / cfg.vms));
  });
}

/** Children still running (by their own pids: exited ones are skipped, their pids may be reused). */
const live = (): ChildProcess[] =>
  [recoveryChild, ...vms.filter(Boolean).map((v) => v.child)].filter(
    (c) => c.exitCode === null && c.signalCode === null,
  );
try {
  const t0 = Date.now();
  for (let i = 0; i < cfg.vms; i += 10)
    await Promise.all(Array.from({ length: Math.min(10, cfg.vms - i) }, (_, k) => startVm(i + k)));
  log(`${cfg.vms} paused QEMUs and replicas in ${Math.round((Date.now() - t0) / 1000)} s`);

  scheduler = new SiteScheduler({ repo, peers, incidents, log: quiet, run: runCycle, vmName: async (id) => id });
  await scheduler.setLink(PEER, {
    bandwidth: cfg.bandwidth,
    ...(cfg.concurrency === undefined ? {} : { concurrency: cfg.concurrency }),
  });
  startWriters();
  const writeStart = Date.now();
  await scheduler.start();
  // Warm-up: until every VM has its first point.
  while ([...rows.values()].some((r) => r.lastPointAt === null)) await new Promise((r) => setTimeout(r, 500));
  const warmupMs = Date.now() - writeStart;
  log(`every VM has a point after ${Math.round(warmupMs / 1000)} s; measuring ${cfg.seconds} s`);

  // The measured window: every second, each VM's lag against its RPO.
  const from = Date.now();
  const firstCycle = cycles.length;
  const writtenAtFrom = written;
  let samples = 0;
  let within = 0;
  let maxLag = 0;
  let sumLag = 0;
  let inFlightSum = 0;
  const lagAtEnd: number[] = [];
  while (Date.now() - from < cfg.seconds * 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = Date.now();
    inFlightSum += inFlight;
    for (const r of rows.values()) {
      const lag = now - Date.parse(r.lastPointAt!);
      samples++;
      if (lag <= r.rpoMs) within++;
      sumLag += lag;
      maxLag = Math.max(maxLag, lag);
    }
  }
  const to = Date.now();
  for (const r of rows.values()) lagAtEnd.push(to - Date.parse(r.lastPointAt!));
  const windowCycles = cycles.slice(firstCycle).filter((c) => c.endedAt <= to);
  const ok = windowCycles.filter((c) => c.ok);
  const cyclesWithin = ok.filter((c) => c.lagBeforeMs !== null && c.lagBeforeMs <= cfg.rpoMs).length;
  writing = false;
  const result = {
    label: cfg.label,
    vms: cfg.vms,
    rpoMs: cfg.rpoMs,
    writeBytesPerSecondPerVm: cfg.writeBytes,
    bandwidth: cfg.bandwidth,
    linkConcurrency: scheduler.links.concurrency(PEER),
    warmupMs,
    windowMs: to - from,
    samples,
    samplesWithinRpo: within,
    fractionWithinRpo: samples ? within / samples : 0,
    meanLagMs: samples ? Math.round(sumLag / samples) : 0,
    maxLagMs: maxLag,
    maxLagAtEndMs: Math.max(...lagAtEnd),
    cycles: windowCycles.length,
    cyclesFailed: windowCycles.length - ok.length,
    cyclesCommittedWithinRpo: cyclesWithin,
    fractionCyclesWithinRpo: ok.length ? cyclesWithin / ok.length : 0,
    meanCycleMs: ok.length ? Math.round(ok.reduce((s, c) => s + c.endedAt - c.startedAt, 0) / ok.length) : 0,
    maxCycleMs: ok.reduce((m, c) => Math.max(m, c.endedAt - c.startedAt), 0),
    maxConcurrency: maxInFlight,
    meanConcurrency: Number((inFlightSum / Math.max(1, Math.round((to - from) / 1000))).toFixed(2)),
    bytesWritten: written - writtenAtFrom,
    bytesSent: ok.reduce((s, c) => s + c.bytesSent, 0),
    bytesMarkedDirty: ok.reduce((s, c) => s + c.bytesChanged, 0),
    writesSkippedWhilePending: skipped,
    writeErrors,
    incident: { openAtEnd: incidentLog.open, events: incidentEvents },
  };
  await writeFile(cfg.result, `${JSON.stringify(result, null, 2)}\n`);
  log(
    `within RPO ${(result.fractionWithinRpo * 100).toFixed(2)}% of ${samples} samples; ${result.cycles} cycles; ` +
      `max lag ${Math.round(maxLag / 1000)} s; incident open at end: ${incidentLog.open}`,
  );
} finally {
  writing = false;
  for (const t of writers) clearInterval(t);
  scheduler?.stop();
  // Cycles still running end on their own; wait for them before the VMs go (bounded).
  const until = Date.now() + 120_000;
  while (inFlight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
  await Promise.all(vms.filter(Boolean).map((v) => v.stop().catch(() => undefined)));
  await site.call('POST', '/shutdown').catch(() => undefined);
  const exited = new Promise<void>((r) =>
    recoveryChild.exitCode !== null ? r() : recoveryChild.once('exit', () => r()),
  );
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  for (const c of live()) c.kill('SIGKILL');
}
process.exit(0);
