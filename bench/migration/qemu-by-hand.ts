/**
 * The baseline of bench/migration: QEMU's own live migration without shared storage, driven
 * by hand through QMP the way an operator (or libvirt) does it: the same guest and devices as
 * a mamori VM (the command line comes from mamori's own argv builder), a destination QEMU with
 * `-incoming defer` exporting an empty disk over NBD, blockdev-mirror (write-blocking) into
 * it, pre-copy migrate with pause-before-switchover, the mirror cancelled at pre-switchover,
 * then `cont` at the destination. No journal, no checks; plain TCP, or with `tls` both streams
 * over TLS as mamori sends them (x509 credentials of two throwaway sites, verify-peer).
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { buildVmArgv } from '../../src/qemu/vm-argv.js';
import { createImage } from '../../src/qemu/qemu-img-write.js';
import { QmpClient } from '../../src/qemu/qmp-client.js';
import { freePort } from '../../src/core/free-port.js';
import type { VmDefinition } from '../../src/vms/vm-definition.js';
import type { DiskRecord } from '../../src/disks/disk-record.js';
import { ensureSiteTls } from '../../src/sites/site-tls.js';
import { writeQemuTlsCreds } from '../../src/sites/qemu-tls-creds.js';

export interface ByHandResult {
  downtimeMs: number;
  totalMs: number;
  ramBytes: number;
  diskBytes: number;
}

interface Guest {
  qmp: QmpClient;
  pidFile: string;
  serialLog: string;
}

async function startQemu(
  dir: string,
  def: VmDefinition,
  disk: DiskRecord,
  guest: { kernel: string; initrd: string },
  accel: 'kvm' | 'tcg',
  extra: string[],
): Promise<Guest> {
  await mkdir(dir, { recursive: true });
  const paths = {
    qmpSocket: join(dir, 'qmp.sock'),
    pidFile: join(dir, 'qemu.pid'),
    serialLog: join(dir, 'serial.log'),
    uefiVars: join(dir, 'vars.fd'),
  };
  const argv = [...buildVmArgv({ def, disks: [disk], paths, accel, testGuest: guest, ovmfCode: null }), ...extra];
  const child = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`qemu-system-x86_64 exited ${code}: ${stderr}`);
  const qmp = await QmpClient.connect(paths.qmpSocket, { connectTimeoutMs: 5_000, retryUntilMs: 10_000 });
  return { qmp, pidFile: paths.pidFile, serialLog: paths.serialLog };
}

export async function killGuest(g: Guest | null): Promise<void> {
  if (!g) return;
  await g.qmp.close().catch(() => undefined);
  const pid = Number((await readFile(g.pidFile, 'utf8').catch(() => '')).trim());
  if (pid > 0) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function waitHeartbeat(serialLog: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!/mamori-hb \d+/.test(await readFile(serialLog, 'utf8').catch(() => ''))) {
    if (Date.now() > end) throw new Error(`no heartbeat in ${serialLog}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Boots the guest, lets it settle for settleMs, then migrates it by hand. Timed like mamori's
 * job: from the moment the destination is asked for (its QEMU started) to the guest running there.
 */
export async function migrateByHand(opts: {
  work: string;
  guest: { kernel: string; initrd: string };
  accel: 'kvm' | 'tcg';
  machineType: string;
  dataBytes: number;
  writelogRate: number | null;
  settleMs: number;
  tls?: boolean;
}): Promise<ByHandResult> {
  const id = randomUUID();
  const diskId = randomUUID();
  const def: VmDefinition = {
    id,
    name: 'byhand',
    vcpus: 1,
    memoryMiB: 256,
    firmware: 'bios',
    machineType: opts.machineType,
    diskIds: [diskId],
    nics: [{ mac: '52:54:00:6d:00:01', model: 'virtio-net-pci', network: 'user' }],
    boot: {
      kind: 'test-guest',
      writelogRate: opts.writelogRate ?? 10,
      acpi: true,
      ...(opts.writelogRate === null ? { writelog: false as const } : {}),
    },
    stopTimeoutSec: 60,
  };
  const diskOf = (path: string): DiskRecord => ({
    id: diskId,
    name: 'data',
    pool: 'bench',
    kind: 'image',
    format: 'qcow2',
    path,
    sizeBytes: opts.dataBytes,
    rdmMode: null,
    shared: false,
    vmId: id,
    ownedByVm: true,
    createdAt: new Date().toISOString(),
    overlays: [],
  });
  await mkdir(opts.work, { recursive: true });
  const srcDisk = join(opts.work, 'src.qcow2');
  const dstDisk = join(opts.work, 'dst.qcow2');
  await createImage(srcDisk, 'qcow2', opts.dataBytes);
  let src: Guest | null = null;
  let dst: Guest | null = null;
  try {
    src = await startQemu(join(opts.work, 'src'), def, diskOf(srcDisk), opts.guest, opts.accel, []);
    await src.qmp.execute('cont');
    await waitHeartbeat(src.serialLog, 180_000);
    await new Promise((r) => setTimeout(r, opts.settleMs));

    // Certificates are made before the clock starts: a site has them long before it migrates.
    const creds = opts.tls ? await tlsDirs(opts.work) : null;
    const t0 = Date.now();
    await createImage(dstDisk, 'qcow2', opts.dataBytes);
    dst = await startQemu(join(opts.work, 'dst'), def, diskOf(dstDisk), opts.guest, opts.accel, ['-incoming', 'defer']);
    const nbdPort = await freePort('127.0.0.1');
    const migPort = await freePort('127.0.0.1');
    const tlsArg: Record<string, string> = {};
    if (creds) {
      await dst.qmp.execute('object-add', {
        'qom-type': 'tls-creds-x509',
        id: 'tls0',
        dir: creds.server,
        endpoint: 'server',
        'verify-peer': true,
      });
      await src.qmp.execute('object-add', {
        'qom-type': 'tls-creds-x509',
        id: 'tls0',
        dir: creds.client,
        endpoint: 'client',
        'verify-peer': true,
      });
      await dst.qmp.execute('migrate-set-parameters', { 'tls-creds': 'tls0' });
      tlsArg['tls-creds'] = 'tls0';
    }
    await dst.qmp.execute('nbd-server-start', {
      addr: { type: 'inet', data: { host: '127.0.0.1', port: String(nbdPort) } },
      ...tlsArg,
    });
    await dst.qmp.execute('block-export-add', {
      type: 'nbd',
      id: 'exp0',
      'node-name': 'disk0',
      name: 'disk0',
      writable: true,
    });
    await dst.qmp.execute('migrate-set-capabilities', {
      capabilities: ['events', 'late-block-activate', 'return-path'].map((capability) => ({ capability, state: true })),
    });
    await dst.qmp.execute('migrate-incoming', { uri: `tcp:127.0.0.1:${migPort}` });

    await src.qmp.execute('blockdev-add', {
      driver: 'nbd',
      'node-name': 'tgt0',
      server: { type: 'inet', host: '127.0.0.1', port: String(nbdPort) },
      export: 'disk0',
      ...tlsArg,
    });
    const ready = src.qmp.waitForEvent('BLOCK_JOB_READY', { timeoutMs: 600_000 });
    await src.qmp.execute('blockdev-mirror', {
      'job-id': 'mirror0',
      device: 'disk0',
      target: 'tgt0',
      sync: 'full',
      'copy-mode': 'write-blocking',
    });
    await ready;
    await src.qmp.execute('migrate-set-capabilities', {
      capabilities: ['events', 'pause-before-switchover', 'return-path'].map((capability) => ({
        capability,
        state: true,
      })),
    });
    await src.qmp.execute('migrate-set-parameters', {
      'downtime-limit': 300,
      'max-bandwidth': 10_000 * 1024 * 1024,
      ...(creds ? { 'tls-creds': 'tls0', 'tls-hostname': '127.0.0.1' } : {}),
    });
    const pre = src.qmp.waitForEvent('MIGRATION', {
      timeoutMs: 600_000,
      predicate: (ev) => ev.data.status === 'pre-switchover' || ev.data.status === 'failed',
    });
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${migPort}` });
    const ev = await pre;
    if (ev.data.status !== 'pre-switchover') throw new Error('the migration by hand failed');
    const jobsGone = src.qmp.waitForEvent('BLOCK_JOB_COMPLETED', { timeoutMs: 60_000 });
    await src.qmp.execute('block-job-cancel', { device: 'mirror0' });
    const mirrored = (await jobsGone).data.offset as number;
    await src.qmp.execute('migrate-continue', { state: 'pre-switchover' });
    let info = await src.qmp.execute('query-migrate');
    while (info.status !== 'completed' && info.status !== 'failed') {
      await new Promise((r) => setTimeout(r, 20));
      info = await src.qmp.execute('query-migrate');
    }
    if (info.status !== 'completed') throw new Error(`the migration by hand ended ${info.status}`);
    // The source's NBD client first, or the export is still in use.
    await src.qmp.execute('blockdev-del', { 'node-name': 'tgt0' });
    await dst.qmp.execute('block-export-del', { id: 'exp0' });
    await dst.qmp.execute('nbd-server-stop');
    await dst.qmp.execute('cont');
    await src.qmp.execute('quit').catch(() => undefined);
    const totalMs = Date.now() - t0;
    return { downtimeMs: info.downtime ?? -1, totalMs, ramBytes: info.ram?.transferred ?? 0, diskBytes: mirrored };
  } finally {
    await killGuest(src);
    await killGuest(dst);
    await rm(opts.work, { recursive: true, force: true });
  }
}

/** QEMU credential folders for a client (source) and a server (destination) that trust each other. */
async function tlsDirs(work: string): Promise<{ client: string; server: string }> {
  const src = await ensureSiteTls({ dir: join(work, 'tls-src'), siteName: 'bench-src' });
  const dst = await ensureSiteTls({ dir: join(work, 'tls-dst'), siteName: 'bench-dst' });
  return {
    client: await writeQemuTlsCreds({
      dir: join(work, 'qemu-tls-src'),
      site: src,
      peerCaPem: dst.caCertPem,
      endpoint: 'client',
    }),
    server: await writeQemuTlsCreds({
      dir: join(work, 'qemu-tls-dst'),
      site: dst,
      peerCaPem: src.caCertPem,
      endpoint: 'server',
    }),
  };
}
