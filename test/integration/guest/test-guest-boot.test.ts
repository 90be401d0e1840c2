import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestGuest, type TestGuest } from '../../../src/guest/build-test-guest.js';
import { parseGuestSerial, verifyWriteLog, type GuestSerialSummary } from '../../../src/guest/writelog-verifier.js';
import { compressSync } from 'lz4-napi';
import { repoRoot } from '../../harness/repo-root.js';

// Boots the real test guest under plain QEMU (TCG: KVM hangs on these
// machines) and checks the write log against what the guest acknowledged.

let guest: TestGuest;
let dir: string;
const running = new Set<ChildProcess>();

before(async () => {
  const started = Date.now();
  guest = await buildTestGuest({ outDir: process.env.MAMORI_GUEST_DIR ?? join(repoRoot, '.cache', 'guest') });
  process.stderr.write(`# test guest ready in ${Date.now() - started} ms (${guest.kernelVersion})\n`);
  dir = await mkdtemp(join(tmpdir(), 'mamori-guest-boot-'));
});

after(async () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Vm {
  child: ChildProcess;
  serial: string;
  qmp: string;
  exited: Promise<number | null>;
  startedAt: number;
}

async function rawDisk(name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}

/**
 * A small first disk makes the data disk /dev/vdb, as in a VM with a system
 * disk, and proves the writer leaves other disks alone.
 */
function boot(
  name: string,
  sysDisk: string,
  dataDisk: string,
  append: string,
  opts: { kernel?: string; dataSerial?: string } = {},
): Vm {
  const serial = join(dir, `${name}.serial.log`);
  const qmp = join(dir, `${name}.qmp`);
  const args = [
    '-machine',
    'q35,accel=tcg',
    '-nodefaults',
    '-display',
    'none',
    '-m',
    '256',
    '-kernel',
    opts.kernel ?? guest.kernel,
    '-initrd',
    guest.initrd,
    '-append',
    `console=ttyS0 ${append}`,
    '-chardev',
    `file,id=ser0,path=${serial}`,
    '-serial',
    'chardev:ser0',
    '-drive',
    `file=${sysDisk},format=raw,if=none,id=sys`,
    '-device',
    'virtio-blk-pci,drive=sys',
    '-drive',
    `file=${dataDisk},format=raw,if=none,id=data`,
    '-device',
    `virtio-blk-pci,drive=data${opts.dataSerial ? `,serial=${opts.dataSerial}` : ''}`,
    '-qmp',
    `unix:${qmp},server=on,wait=off`,
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (stderr.trim()) process.stderr.write(`# qemu (${name}) stderr: ${stderr.trim()}\n`);
      resolve(code);
    });
  });
  return { child, serial, qmp, exited, startedAt: Date.now() };
}

function kill(vm: Vm): void {
  if (vm.child.exitCode === null && vm.child.signalCode === null) vm.child.kill('SIGKILL');
}

async function serialOf(vm: Vm): Promise<{ text: string; s: GuestSerialSummary }> {
  const text = await readFile(vm.serial, 'utf8').catch(() => '');
  return { text, s: parseGuestSerial(text) };
}

async function waitSerial(
  vm: Vm,
  what: string,
  timeoutMs: number,
  ok: (s: GuestSerialSummary) => boolean,
): Promise<GuestSerialSummary> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { text, s } = await serialOf(vm);
    if (ok(s)) return s;
    if (vm.child.exitCode !== null || vm.child.signalCode !== null) {
      assert.fail(`QEMU exited while waiting for ${what}; serial tail:\n${text.slice(-2000)}`);
    }
    if (Date.now() > deadline) assert.fail(`no ${what} within ${timeoutMs} ms; serial tail:\n${text.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A minimal QMP exchange: greeting, qmp_capabilities, then `command`; events are skipped. */
async function qmp(path: string, command: string): Promise<unknown> {
  const sock = connect(path);
  try {
    const replies: Array<Record<string, unknown>> = [];
    let buffered = '';
    let wake: (() => void) | null = null;
    sock.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line) replies.push(JSON.parse(line) as Record<string, unknown>);
      }
      wake?.();
    });
    const next = async (): Promise<Record<string, unknown>> => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const i = replies.findIndex((r) => !('event' in r));
        if (i >= 0) return replies.splice(i, 1)[0] as Record<string, unknown>;
        if (Date.now() > deadline) assert.fail('QMP did not answer within 10 s');
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    assert.ok('QMP' in (await next()), 'QMP greeting');
    sock.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
    assert.deepEqual((await next()).return, {});
    sock.write(JSON.stringify({ execute: command }) + '\n');
    const reply = await next();
    assert.ok('return' in reply, `QMP ${command}: ${JSON.stringify(reply)}`);
    return reply.return;
  } finally {
    sock.destroy();
  }
}

async function exitWithin(vm: Vm, ms: number): Promise<number | null | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([vm.exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

test('a second build with the same inputs is a no-op', async () => {
  const outDir = process.env.MAMORI_GUEST_DIR ?? join(repoRoot, '.cache', 'guest');
  const stampBefore = await readFile(join(outDir, 'guest.json'), 'utf8');
  const started = Date.now();
  const again = await buildTestGuest({ outDir });
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  assert.deepEqual(again, guest);
  assert.equal(await readFile(join(outDir, 'guest.json'), 'utf8'), stampBefore);
});

test('the guest writes its log and powers off cleanly on system_powerdown', { timeout: 180_000 }, async (t) => {
  const sys = await rawDisk('a-sys.raw', 1 << 20);
  const data = await rawDisk('a-data.raw', 64 << 20);
  const vm = boot('a', sys, data, 'mamori.wl=/dev/vdb mamori.wl_rate=20');
  try {
    const ready = await waitSerial(
      vm,
      'ready, 2 heartbeats and an ack',
      90_000,
      (s) => s.boots.length === 1 && s.heartbeats.length >= 2 && s.acks.length > 0,
    );
    t.diagnostic(`ready + 2 heartbeats after ${Date.now() - vm.startedAt} ms`);
    assert.deepEqual(ready.errors, []);
    await new Promise((r) => setTimeout(r, 3000));
    await qmp(vm.qmp, 'system_powerdown');
    const pressed = Date.now();
    assert.equal(await exitWithin(vm, 60_000), 0, 'QEMU exits by itself after the guest powers off');
    t.diagnostic(`powered off ${Date.now() - pressed} ms after system_powerdown`);

    const { s } = await serialOf(vm);
    const lastAck = s.acks.at(-1);
    assert.ok(lastAck !== undefined && lastAck >= 40, `at 20/s for ~5 s, got ${lastAck}`);
    assert.deepEqual(
      s.acks,
      Array.from({ length: lastAck }, (_, i) => i + 1),
      'acks are 1..N without holes',
    );
    assert.deepEqual(s.poweroffs, [lastAck]);
    const hbSeqs = s.heartbeats.map((h) => h.wlSeq);
    assert.deepEqual(
      hbSeqs,
      [...hbSeqs].sort((a, b) => a - b),
      'heartbeat wl_seq never goes back',
    );
    assert.ok(s.heartbeats.every((h) => h.bootId === s.boots[0]));

    const report = await verifyWriteLog(data);
    t.diagnostic(JSON.stringify(report));
    assert.equal(report.consistent, true);
    assert.equal(report.lastSequence, lastAck);
    assert.equal(report.gapFreePrefix, lastAck);
    assert.deepEqual(report.bootIds, s.boots);
    assert.equal((await verifyWriteLog(sys)).records, 0, 'the system disk is untouched');
  } finally {
    kill(vm);
  }
});

test(
  'with mamori.acpi=0 the power button is ignored; a kill keeps the acked prefix; a reboot appends',
  { timeout: 240_000 },
  async (t) => {
    const sys = await rawDisk('b-sys.raw', 1 << 20);
    const data = await rawDisk('b-data.raw', 64 << 20);
    // This test boots the uncompressed PVH kernel, the first one Debian's bzImage.
    assert.ok(guest.kernelPvh, "the build extracts a PVH kernel from Debian 12's XZ bzImage");
    const first = boot('b1', sys, data, 'mamori.wl=/dev/vdb mamori.wl_rate=20 mamori.acpi=0', {
      kernel: guest.kernelPvh,
    });
    let killedAck: number;
    try {
      await waitSerial(first, 'ready and acks', 90_000, (s) => s.boots.length === 1 && s.acks.length >= 5);
      t.diagnostic(`PVH boot: ready and 5 acks after ${Date.now() - first.startedAt} ms`);
      await qmp(first.qmp, 'system_powerdown');
      const acksAtPress = (await serialOf(first)).s.acks.length;
      assert.equal(await exitWithin(first, 3000), 'timeout', 'the guest ignores the power button');
      const after = await waitSerial(first, 'acks after the press', 10_000, (s) => s.acks.length > acksAtPress + 10);
      assert.deepEqual(after.poweroffs, []);
      first.child.kill('SIGKILL');
      await first.exited;
      killedAck = (await serialOf(first)).s.acks.at(-1) as number;
    } finally {
      kill(first);
    }
    const crashed = await verifyWriteLog(data);
    t.diagnostic(`after kill -9: last ack ${killedAck}, ${JSON.stringify(crashed)}`);
    assert.deepEqual(crashed.gaps, []);
    assert.ok(crashed.gapFreePrefix >= killedAck, 'every acknowledged record survived');
    // At most the record in flight when QEMU died is on disk without an ack.
    assert.ok((crashed.lastSequence ?? 0) <= killedAck + 1);

    // The reboot names the log disk by its serial, as a VM whose disk order may change would.
    const second = boot('b2', sys, data, 'mamori.wl=serial:mamori-log mamori.wl_rate=20', {
      kernel: guest.kernelPvh,
      dataSerial: 'mamori-log',
    });
    try {
      const s2 = await waitSerial(second, 'acks after reboot', 90_000, (s) => s.acks.length >= 10);
      assert.equal(s2.acks[0], crashed.gapFreePrefix + 1, 'the writer appends after the surviving prefix');
      await qmp(second.qmp, 'system_powerdown');
      assert.equal(await exitWithin(second, 60_000), 0);
    } finally {
      kill(second);
    }
    const s2 = (await serialOf(second)).s;
    const report = await verifyWriteLog(data);
    t.diagnostic(JSON.stringify(report));
    assert.equal(report.consistent, true);
    assert.equal(report.lastSequence, s2.acks.at(-1));
    assert.deepEqual(s2.poweroffs, [s2.acks.at(-1)]);
    assert.equal(report.bootIds.length, 2);
    assert.equal(report.bootIds[1], s2.boots[0]);
    assert.notEqual(report.bootIds[0], report.bootIds[1]);
  },
);

test('mamori.wl_payload=text: the log verifies record by record and compresses', { timeout: 180_000 }, async (t) => {
  const sys = await rawDisk('c-sys.raw', 1 << 20);
  const data = await rawDisk('c-data.raw', 64 << 20);
  const vm = boot('c', sys, data, 'mamori.wl=/dev/vdb mamori.wl_rate=50 mamori.wl_payload=text');
  try {
    const ready = await waitSerial(vm, '100 acks', 90_000, (s) => (s.acks.at(-1) ?? 0) >= 100);
    assert.deepEqual(ready.errors, []);
    await qmp(vm.qmp, 'system_powerdown');
    assert.equal(await exitWithin(vm, 60_000), 0);
  } finally {
    kill(vm);
  }
  const { text, s } = await serialOf(vm);
  assert.match(text, /mamori-wl start resume_after=0 slots=\d+ rate=50 payload=text/);
  const report = await verifyWriteLog(data);
  t.diagnostic(JSON.stringify(report));
  assert.equal(report.consistent, true);
  assert.equal(report.lastSequence, s.acks.at(-1));
  const bytes = (await readFile(data)).subarray(0, 100 * 4096);
  const ratio = bytes.length / compressSync(bytes).length;
  t.diagnostic(`lz4 ratio of the first 100 records: ${ratio.toFixed(2)}`);
  assert.ok(ratio >= 2 && ratio <= 4, `ratio ${ratio}`);
});
