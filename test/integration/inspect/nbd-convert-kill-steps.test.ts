import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess } from '../../harness/site-process.js';
import { alive } from '../../harness/job-kill-repl.js';
import { mbrRhel6 } from '../../harness/disk-fixtures.js';
import { assertRolledBack, cutAtStep, killProcessesOver, leftovers } from '../../harness/job-kill-conv.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { DiskRecord } from '../../../src/disks/disk-record.js';
import type { ConvertResult } from '../../../src/convert/conversion-job.js';

/*
 * Kill -9 at every step of a conversion from an NBD source (copy, register, start: the NBD
 * path's steps, convertSteps(start) in convert/conversion-job.ts), each a fault point
 * `job:vm-convert:STEP` that SIGKILLs the server after the step's work and before the journal
 * says done. The source is the RHEL 6 fixture served read-only by qemu-nbd on a unix socket.
 * Policy rollback: after the restart the job is failed saying what was removed, no VM, disk,
 * file, scratch folder (the copy's storage daemon runs in conversions/JOB) or QEMU of it is
 * left, the source's bytes and its server are untouched, and the same conversion then succeeds
 * with a disk equal to the source. One site for the file, restarted per cut.
 *
 * P2V goes through the same job with the same step names (copy, register, start) and the same
 * recovery rule (it also stops the P2V target's storage daemon in conversions/JOB), so it is
 * not cut here a second time.
 */
let site: SiteProcess;
let dir: string;
let fixture: string;
let socket: string;
let server: ChildProcess;
const servers: ChildProcess[] = [];
let sourceSum: string;

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Starts an NBD server (argv) and waits for its unix socket; it is stopped in after(). */
async function serve(cmd: string, args: string[], sock: string): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: 'ignore' });
  servers.push(child);
  const deadline = Date.now() + 20_000;
  const isSocket = (): Promise<boolean> =>
    stat(sock).then(
      (s) => s.isSocket(),
      () => false,
    );
  while (!(await isSocket())) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited (${child.exitCode})`);
    if (Date.now() > deadline) throw new Error(`${cmd} did not listen within 20 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-nbd-kill-'));
  fixture = await mbrRhel6(dir);
  sourceSum = await sha256(fixture);
  socket = join(dir, 'nbd.sock');
  server = await serve(
    'qemu-nbd',
    ['--read-only', '--persistent', '--shared=8', '-f', 'raw', '-x', 'disk', '-k', socket, fixture],
    socket,
  );
  site = await SiteProcess.create('site-nbdk');
  await site.start();
});

after(async () => {
  if (site) {
    for (const pid of await site.vmPids()) site.trackPid(pid);
    const data = site.dataDir;
    await site.destroy();
    await killProcessesOver(data);
  }
  for (const child of servers.filter((c) => c.exitCode === null && c.signalCode === null)) {
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await gone;
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

const uri = (): string => `nbd+unix:///disk?socket=${socket}`;
const convertArgs = (): string[] => ['convert', uri(), '--name', 'nbdconv', '--start', '--memory', '128'];

/** The source is as it was: same bytes, its server still up and still serving them. */
async function sourceUntouched(): Promise<void> {
  assert.equal(await sha256(fixture), sourceSum, 'the source image was not written');
  assert.equal(server.exitCode, null, 'qemu-nbd still serves the source');
  const r = await site.cli('inspect', uri(), '--json');
  assert.equal(r.code, 0, `the source still answers: ${r.stderr}`);
}

for (const step of ['copy', 'register', 'start']) {
  test(`vm-convert from NBD cut after '${step}': rolled back, nothing of it left, the source untouched`, async () => {
    const { job } = await cutAtStep(site, 'vm-convert', step, () => site.cli('--json', ...convertArgs()));
    assert.equal(job.target, 'nbdconv');
    assertRolledBack(job, step === 'copy' ? /partial copy was removed/ : /VM nbdconv it had registered .* removed/);
    assert.deepEqual(
      (await site.cliJson<VmView[]>('vm', 'list')).map((v) => v.name),
      [],
      'no VM named nbdconv (a duplicate would follow on the rerun)',
    );
    assert.deepEqual(await site.cliJson<DiskRecord[]>('disk', 'list'), [], 'no copied disk stays');
    assert.deepEqual(
      (await site.cliJson<Job[]>('job', 'list')).filter((j) => j.state === 'running').map((j) => `${j.kind} ${j.id}`),
      [],
    );
    assert.deepEqual(await leftovers(site), []);
    await sourceUntouched();
  });
}

test("kill -9 in the middle of the copy: the copy's storage daemon and scratch folder go with the rollback", async () => {
  // The same bytes served slowly (a QEMU throttle filter, 8 MiB/s): the copy is still under way
  // when the test sees its storage daemon's pid file, whatever the machine's speed.
  const slowSock = join(dir, 'slow.sock');
  const slow = await serve(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=file,node-name=file0,filename=${fixture},read-only=on`,
      '--blockdev',
      'driver=raw,node-name=raw0,file=file0,read-only=on',
      '--object',
      'throttle-group,id=tg0,x-bps-read=8388608',
      '--blockdev',
      'driver=throttle,node-name=slow0,throttle-group=tg0,file=raw0,read-only=on',
      '--nbd-server',
      `addr.type=unix,addr.path=${slowSock}`,
      '--export',
      'type=nbd,id=exp0,node-name=slow0,name=disk',
    ],
    slowSock,
  );
  const jobsBefore = new Set((await site.cliJson<Job[]>('job', 'list')).map((j) => j.id));
  const running = site.cli('--json', 'convert', `nbd+unix:///disk?socket=${slowSock}`, '--name', 'nbdslow');
  const conversions = join(site.dataDir, 'conversions');
  const pidFile = await site.waitFor(
    "the copy's storage daemon",
    async () => {
      for (const d of await readdir(conversions).catch(() => [] as string[])) {
        const f = join(conversions, d, 'qemu-storage-daemon.pid');
        if (Number((await readFile(f, 'utf8').catch(() => '')).trim()) > 0) return f;
      }
      return undefined;
    },
    120_000,
  );
  const daemonPid = Number((await readFile(pidFile, 'utf8')).trim());
  await site.crashServer();
  assert.notEqual((await running).code, 0, 'the CLI saw its server go');
  assert.ok(await alive(daemonPid), "the copy's daemon outlived the server");
  await site.start();
  const job = (await site.cliJson<Job[]>('job', 'list')).find((j) => j.kind === 'vm-convert' && !jobsBefore.has(j.id));
  assert.ok(job, 'the cut conversion has its job');
  assert.equal(job.steps.find((s) => s.name === 'copy')?.state, 'running', 'cut during the copy');
  assertRolledBack(job, /partial copy was removed/);
  assert.ok(!(await alive(daemonPid)), 'the daemon was stopped');
  assert.deepEqual(await readdir(conversions).catch(() => []), [], 'no scratch folder stays');
  assert.deepEqual(await site.cliJson<VmView[]>('vm', 'list'), []);
  assert.deepEqual(await site.cliJson<DiskRecord[]>('disk', 'list'), []);
  assert.deepEqual(await leftovers(site), []);
  assert.equal(slow.exitCode, null, 'the source server is untouched');
  await sourceUntouched();
});

test('after every cut, the same NBD conversion succeeds and its disk equals the source', async () => {
  const r = await site.cli('--json', ...convertArgs());
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 2000));
  const job = JSON.parse(r.stdout) as Job & { result: ConvertResult };
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  assert.deepEqual(job.result.disks, ['nbdconv-disk0']);
  const vm = await site.cliJson<VmView>('vm', 'show', 'nbdconv');
  assert.equal(vm.state, 'running');
  site.trackPid(vm.pid!);
  // Off first: QEMU holds the image's write lock while it runs.
  await site.cliJson('vm', 'kill', 'nbdconv');
  const cmp = await runProcess(
    'qemu-img',
    ['compare', '-f', 'raw', '-F', vm.disks[0]!.format, fixture, vm.disks[0]!.path],
    { timeoutMs: 120_000, okCodes: [0, 1] },
  );
  assert.equal(cmp.code, 0, cmp.stdout);
  assert.deepEqual(await leftovers(site), []);
  await sourceUntouched();
});
