import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { TwoSites } from '../../harness/two-sites.js';
import { MAMORI_BIN, sleep } from '../../harness/site-process.js';
import { mbrRhel6 } from '../../harness/disk-fixtures.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { ConvertResult } from '../../../src/convert/conversion-job.js';

/*
 * P2V of a running machine, with real parts: the source "machine" is a network namespace
 * running `mamori p2v-agent` on a loop device that holds the RHEL 6 fixture disk, and a
 * writer keeps changing that device while the site in the other namespace converts it
 * over TLS NBD. Two writers:
 *   - raw writes into the swap partition (nothing to freeze): the passes must converge and
 *     the image end byte-for-byte equal to the device (qemu-img compare);
 *   - files written and fsynced into the mounted data partition: the last pass must run with
 *     it frozen, the copied filesystem must be clean (e2fsck), hold every file finished
 *     before the copy began, and the writer must carry on after the thaw.
 */
const MiB = 1024 * 1024;
/** Where mbrRhel6 puts its partitions (sectors). */
const SWAP = { start: 133120 * 512, length: 16384 * 512 };
const DATA = { start: 151552 * 512, length: 65536 * 512 };
const FILE_BYTES = 16 * 1024;

let dir: string;
let sites: TwoSites;
const loops: string[] = [];
const children: ChildProcess[] = [];
const agents: Agent[] = [];
let mountPoint: string | null = null;

interface Agent {
  proc: ChildProcess;
  url: string;
  key: string;
  tmp: string;
  stderr: string[];
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-p2v-test-'));
  const fixture = await mbrRhel6(dir);
  for (const name of ['raw', 'fs']) {
    const file = join(dir, `${name}.lun`);
    await copyFile(fixture, file);
    const dev = (
      await runProcess('losetup', ['--find', '--show', '--partscan', file], { timeoutMs: 10_000 })
    ).stdout.trim();
    loops.push(dev);
    // The kernel may not have made the partition nodes yet; partx adds any that are missing.
    if (!existsSync(`${dev}p5`)) await runProcess('partx', ['-a', dev], { timeoutMs: 10_000 }).catch(() => undefined);
  }
  sites = await TwoSites.create({ start: false });
  await sites.b.start();
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const a of agents) await stopAgent(a);
  if (mountPoint) {
    await runProcess('fsfreeze', ['--unfreeze', mountPoint]).catch(() => undefined);
    await runProcess('umount', [mountPoint], { timeoutMs: 30_000 }).catch(() => undefined);
  }
  for (const dev of loops) await runProcess('losetup', ['-d', dev], { timeoutMs: 10_000 }).catch(() => undefined);
  if (sites) await sites.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The agent in site-a's namespace (the "physical machine"), listening on its link address. */
async function startAgent(device: string, port: number): Promise<Agent> {
  const tmp = join(dir, `agent-${port}`);
  await mkdir(tmp, { recursive: true });
  const [file, args] = sites.namespaces[0]!.wrap(process.execPath, [
    MAMORI_BIN,
    '--json',
    'p2v-agent',
    '--device',
    device,
    '--listen',
    sites.link.a.address,
    '--port',
    String(port),
  ]);
  // TMPDIR puts the agent's scratch folder (and its storage daemon's pid file) where cleanup finds it.
  const proc = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  children.push(proc);
  const stderr: string[] = [];
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => stderr.push(...c.split('\n').filter(Boolean)));
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const info = JSON.parse(out) as { url: string; agentKey: string };
      const agent = { proc, url: info.url, key: info.agentKey, tmp, stderr };
      agents.push(agent);
      return agent;
    } catch {
      if (proc.exitCode !== null) break;
      await sleep(100);
    }
  }
  throw new Error(`p2v-agent did not start: ${stderr.join('\n')}`);
}

/** SIGTERM (the agent thaws and stops its daemon), then any daemon it left, by its own pid file. */
async function stopAgent(a: Agent): Promise<void> {
  if (a.proc.exitCode === null && a.proc.signalCode === null) {
    const exited = new Promise((r) => a.proc.once('exit', r));
    a.proc.kill('SIGTERM');
    const timer = setTimeout(() => a.proc.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  for (const d of await readdir(a.tmp).catch(() => [] as string[])) {
    const pid = Number((await readFile(join(a.tmp, d, 'qemu-storage-daemon.pid'), 'utf8').catch(() => '')).trim());
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

/** A node process running `script` with args; killed by pid in after() if a test leaves it. */
function startWriter(script: string, args: string[]): ChildProcess {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(proc);
  return proc;
}

async function stopWriter(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await exited;
}

function untilLines(a: Agent, re: RegExp, count: number): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (a.stderr.filter((l) => re.test(l)).length >= count) resolve();
      else setTimeout(check, 10);
    };
    check();
  });
}

async function diskPath(name: string): Promise<string> {
  const disks = await sites.b.cliJson<{ name: string; path: string }[]>('disk', 'list');
  const d = disks.find((x) => x.name === name);
  assert.ok(d, `disk ${name} exists`);
  return d.path;
}

test('P2V of a device a writer keeps changing converges and ends equal to the device', async () => {
  const [device] = loops as [string];
  const agent = await startAgent(device, 10809);
  // Random 4 KiB blocks into the swap partition, each synced, until killed.
  const writer = startWriter(
    `
    import { openSync, writeSync, fdatasyncSync } from 'node:fs';
    import { randomBytes, randomInt } from 'node:crypto';
    const [dev, start, length] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
    const fd = openSync(dev, 'r+');
    for (;;) {
      writeSync(fd, randomBytes(4096), 0, 4096, start + randomInt(length / 4096) * 4096);
      fdatasyncSync(fd);
      await new Promise((r) => setTimeout(r, 2));
    }`,
    [device, String(SWAP.start), String(SWAP.length)],
  );
  // The writer stops once the second pass has started: it changed the device during the first.
  const stopped = untilLines(agent, /^p2v-agent: checksums of/, 2).then(() => stopWriter(writer));
  const r = await sites.b.cli(
    '--json',
    'convert',
    agent.url,
    '--agent-key',
    agent.key,
    '--name',
    'p2v-raw',
    '--format',
    'raw',
    '--converge-below',
    '0',
  );
  // A conversion that failed before its second pass must fail the test, not leave it waiting.
  if (r.code !== 0) await stopWriter(writer);
  else await stopped;
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 2000));
  const job = JSON.parse(r.stdout) as Job & { result: ConvertResult };
  assert.equal(job.state, 'succeeded');
  assert.equal(job.result.os.distro, 'rhel', "the agent's disk is inspected like any other");
  assert.equal(job.result.firmware, 'bios');
  const passes = job.result.p2v!.passes;
  assert.ok(passes.length >= 3, `passes: ${JSON.stringify(passes)}`);
  assert.ok(
    passes[1]!.changedBytes > 0 && passes[1]!.changedBytes <= SWAP.length,
    'the second pass resent only what the writer changed',
  );
  assert.ok(passes[0]!.sentBytes < 128 * MiB, 'zero chunks are not sent');
  assert.equal(passes.at(-1)!.changedBytes, 0, 'the last check found nothing left');
  assert.equal(
    job.result.p2v!.consistency,
    'crash-consistent',
    'nothing on the device is mounted, so nothing was frozen',
  );
  assert.ok(job.result.warnings.some((w) => /crash-consistent/.test(w)));
  const cmp = await runProcess(
    'qemu-img',
    ['compare', '-f', 'raw', '-F', 'raw', await diskPath('p2v-raw-disk0'), device],
    { timeoutMs: 120_000 },
  );
  assert.match(cmp.stdout, /Images are identical/);
});

test('P2V refuses a wrong agent key and an absent agent, and leaves nothing behind', async () => {
  const agent = agents[0]!;
  const wrong = await sites.b.cli(
    'convert',
    agent.url,
    '--agent-key',
    'not-the-key-of-this-agent',
    '--name',
    'p2v-bad',
  );
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /does not hold this agent key.*\[PEER_AUTH_FAILED\]/);
  const absent = await sites.b.cli(
    'convert',
    `nbd://${sites.link.a.address}:10900`,
    '--agent-key',
    agent.key,
    '--name',
    'p2v-bad',
  );
  assert.notEqual(absent.code, 0);
  assert.match(absent.stderr, /is `mamori p2v-agent` running there\?.*\[PEER_UNREACHABLE\]/);
  const noKey = await sites.b.cli('convert', agent.url, '--name', 'p2v-bad');
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /--agent-key/);
  const disks = await sites.b.cliJson<{ name: string }[]>('disk', 'list');
  assert.deepEqual(
    disks.map((d) => d.name).filter((n) => n.startsWith('p2v-bad')),
    [],
  );
  const vms = await sites.b.cliJson<{ name: string }[]>('vm', 'list');
  assert.deepEqual(
    vms.map((v) => v.name).filter((n) => n.startsWith('p2v-bad')),
    [],
  );
});

test('P2V of a mounted filesystem being written freezes it for the last pass: the copy is clean', async () => {
  const device = loops[1]!;
  mountPoint = join(dir, 'mnt');
  await mkdir(mountPoint);
  await runProcess('mount', ['-t', 'ext4', `${device}p5`, mountPoint], { timeoutMs: 30_000 });
  const log = join(dir, 'files.log');
  await writeFile(log, '');
  // Files f0, f1, ... of 16 KiB filled with n % 251, each fsynced before its number is logged.
  const writer = startWriter(
    `
    import { openSync, writeSync, fsyncSync, closeSync, appendFileSync } from 'node:fs';
    const [mnt, log, bytes] = [process.argv[1], process.argv[2], Number(process.argv[3])];
    for (let n = 0; ; n++) {
      const fd = openSync(mnt + '/f' + n, 'w');
      writeSync(fd, Buffer.alloc(bytes, n % 251));
      fsyncSync(fd);
      closeSync(fd);
      appendFileSync(log, n + '\\n');
      await new Promise((r) => setTimeout(r, 20));
    }`,
    [mountPoint, log, String(FILE_BYTES)],
  );
  const agent = await startAgent(device, 10811);
  const logged = async (): Promise<number> => (await readFile(log, 'utf8')).split('\n').filter(Boolean).length;
  await sites.b.waitFor('the writer to have written files', async () => (await logged()) >= 5);
  const before = await logged();
  const job = await sites.b.cliJson<Job & { result: ConvertResult }>(
    'convert',
    agent.url,
    '--agent-key',
    agent.key,
    '--name',
    'p2v-fs',
    '--format',
    'raw',
  );
  const atEnd = await logged();
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  const p2v = job.result.p2v!;
  assert.equal(p2v.consistency, 'frozen', p2v.note);
  assert.deepEqual(p2v.frozenFilesystems, [mountPoint]);
  assert.ok(p2v.passes.some((p) => p.frozen) && p2v.passes.at(-1)!.changedBytes === 0);
  assert.ok(
    agent.stderr.some((l) => /froze .*mnt/.test(l)) && agent.stderr.some((l) => /thawed .*mnt/.test(l)),
    agent.stderr.join('\n'),
  );
  // Thawed: the writer carries on.
  await sites.b.waitFor('the writer to carry on after the thaw', async () => (await logged()) > atEnd + 2, 30_000);
  await stopWriter(writer);

  // The data partition of the copy: clean, and holding every file finished before the copy began.
  const image = await open(await diskPath('p2v-fs-disk0'), 'r');
  const part = Buffer.alloc(DATA.length);
  await image.read(part, 0, DATA.length, DATA.start);
  await image.close();
  const partFile = join(dir, 'copied-data.ext4');
  await writeFile(partFile, part);
  const fsck = await runProcess('e2fsck', ['-fn', partFile], { timeoutMs: 60_000 }).catch((e: Error) => e);
  assert.ok(
    !(fsck instanceof Error),
    `e2fsck finds the frozen copy clean: ${fsck instanceof Error ? fsck.message : ''}`,
  );
  const ls = (await runProcess('debugfs', ['-R', 'ls -p /', partFile], { timeoutMs: 30_000 })).stdout;
  const numbers = [...ls.matchAll(/\/f(\d+)\//g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  assert.ok(numbers.length >= before, `${numbers.length} files copied, ${before} finished before the copy`);
  assert.deepEqual(
    numbers,
    numbers.map((_, i) => i),
    'files f0..fN, none missing',
  );
  for (const n of [0, Math.floor(numbers.length / 2), numbers.length - 2]) {
    await runProcess('debugfs', ['-R', `dump /f${n} ${join(dir, 'dumped')}`, partFile], { timeoutMs: 30_000 });
    assert.ok((await readFile(join(dir, 'dumped'))).equals(Buffer.alloc(FILE_BYTES, n % 251)), `f${n} is whole`);
  }
});
