import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { runProcess } from '../../../src/core/run-process.js';
import { NetNs, runTag } from '../../harness/netns.js';
import { WanLink } from '../../harness/wan-link.js';
import { WAN_PROFILES, WAN_PROFILE_NAMES, type WanProfile } from '../../harness/wan-profile.js';

/*
 * The WAN emulator (test/harness/wan-link.ts) with real namespaces and real TCP, no QEMU:
 * through each profile a round trip takes at least the RTT, N bytes take at least N / rate and
 * arrive intact and in order, in both directions; cuts stop traffic and restores resume it;
 * destroy() leaves nothing. Only lower time bounds are asserted (the machine is shared).
 */

const PROBE = fileURLToPath(new URL('../../harness/wan-probe.js', import.meta.url));
const PORT = 8443;
const ADDRESSES: [string, string] = ['10.213.0.1', '10.213.0.2'];
/** Bytes per bulk transfer: about 2 s at each profile's rate. */
const BULK: Record<string, number> = { '1g-10ms': 256 << 20, '100m-50ms': 24 << 20, '20m-100ms': 5 << 20 };

interface Rig {
  a: NetNs;
  b: NetNs;
  link: WanLink;
  servers: ChildProcess[];
}

const rigs = new Set<Rig>();
after(async () => {
  for (const r of rigs) await teardown(r);
});

async function rig(profile: WanProfile): Promise<Rig> {
  const tag = runTag();
  const short = tag.split('-')[1]!;
  const a = await NetNs.create(`mamori-${tag}-a`);
  const b = await NetNs.create(`mamori-${tag}-b`);
  const r: Rig = { a, b, link: undefined as unknown as WanLink, servers: [] };
  rigs.add(r);
  r.link = await WanLink.create(a, b, { profile, tag: short, middleName: `mamori-${tag}-w`, addresses: ADDRESSES });
  for (const [ns, address] of [
    [a, ADDRESSES[0]],
    [b, ADDRESSES[1]],
  ] as const) {
    r.servers.push(await startServer(ns, `${address}:${PORT}`));
  }
  return r;
}

async function teardown(r: Rig): Promise<void> {
  rigs.delete(r);
  for (const s of r.servers) s.kill('SIGKILL');
  await r.link?.destroy();
  await r.a.delete();
  await r.b.delete();
}

function startServer(ns: NetNs, listen: string): Promise<ChildProcess> {
  const [file, args] = ns.wrap(process.execPath, [PROBE, 'serve', listen]);
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (c: string) => c.includes('listening') && resolve(child));
    child.once('exit', (code) => reject(new Error(`probe server exited ${code}`)));
  });
}

async function probe<T>(ns: NetNs, ...args: string[]): Promise<T> {
  const r = await runProcess(...ns.wrap(process.execPath, [PROBE, ...args]), { timeoutMs: 120_000, okCodes: [0, 2] });
  return JSON.parse(r.stdout) as T;
}

/** An echo connection kept open across a cut: send(n) then waitPong(n). */
class Hold {
  readonly child: ChildProcess;
  out = '';
  constructor(ns: NetNs, target: string) {
    const [file, args] = ns.wrap(process.execPath, [PROBE, 'hold', target]);
    this.child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.out += c));
  }
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }
  /** Resolves true once `what` is in the output, false if `timeoutMs` passes first. */
  async seen(what: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.out.includes(what)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.out.includes(what);
  }
  close(): void {
    this.child.kill('SIGKILL');
  }
}

/** CPU seconds (user + system) a process has used, from /proc (clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function forwardersCpu(link: WanLink): Promise<number> {
  let sum = 0;
  for (const pid of link.forwarderPids) sum += await cpuSeconds(pid);
  return sum;
}

function mbps(bytes: number, ms: number): string {
  return ((bytes * 8) / (ms * 1000)).toFixed(1);
}

for (const name of WAN_PROFILE_NAMES) {
  const profile = WAN_PROFILES[name];
  test(`${name}: round trips take at least ${profile.rttMs} ms and bulk transfers at least bytes / rate, intact, both ways`, async (t) => {
    const r = await rig(profile);
    try {
      for (const [from, to, target] of [
        [r.a, 'b', `${ADDRESSES[1]}:${PORT}`],
        [r.b, 'a', `${ADDRESSES[0]}:${PORT}`],
      ] as const) {
        const rt = await probe<{ firstMs: number; rttMs: number[] }>(from, 'rtt', target, '5');
        // A new connection costs the handshake's round trip, then the first byte's.
        assert.ok(rt.firstMs >= 2 * profile.rttMs, `first echo to ${to} after ${rt.firstMs} ms`);
        for (const ms of rt.rttMs) assert.ok(ms >= profile.rttMs, `round trip to ${to} of ${ms} ms`);

        const n = BULK[name]!;
        const fwdCpu0 = await forwardersCpu(r.link);
        const bulk = await probe<{
          bytes: number;
          elapsedMs: number;
          cpuMs: number;
          sentSha256: string;
          reply: { bytes: number; sha256: string; cpuMs: number };
        }>(from, 'bulk', target, String(n));
        const fwdCpu = (await forwardersCpu(r.link)) - fwdCpu0;
        assert.equal(bulk.reply.bytes, n);
        assert.equal(bulk.reply.sha256, bulk.sentSha256, 'the bytes arrived intact and in order');
        const floorMs = (n / profile.rateBps) * 1000;
        assert.ok(bulk.elapsedMs >= floorMs, `${n} bytes to ${to} in ${bulk.elapsedMs} ms, under ${floorMs} ms`);
        // Reported, not asserted: the payload's rate once the connection's two setup round trips are out.
        const payloadMs = bulk.elapsedMs - 2 * profile.rttMs;
        t.diagnostic(
          `${name} to ${to}: rtt ${Math.min(...rt.rttMs).toFixed(1)}-${Math.max(...rt.rttMs).toFixed(1)} ms, ` +
            `${mbps(n, payloadMs)} Mbit/s of ${profile.rateBps * 8e-6} (${(((n / payloadMs) * 1000) / profile.rateBps).toFixed(3)} of the rate); ` +
            `CPU s per GB: forwarders ${((fwdCpu * 1e9) / n).toFixed(2)}, sender ${((bulk.cpuMs * 1e6) / n).toFixed(2)}, ` +
            `receiver ${((bulk.reply.cpuMs * 1e6) / n).toFixed(2)}`,
        );
      }
    } finally {
      await teardown(r);
    }
  });
}

test('cuts: blackhole holds an open connection and resumes it, down and reset fail at once; other ports are refused', async () => {
  const r = await rig(WAN_PROFILES['100m-50ms']);
  const target = `${ADDRESSES[1]}:${PORT}`;
  const hold = new Hold(r.a, target);
  try {
    hold.send('1');
    assert.ok(await hold.seen('pong 1\n', 30_000), hold.out);

    await r.link.cut('blackhole');
    assert.ok(r.link.isCut);
    hold.send('2');
    // An absence can only be shown over a while: 2 s is 40 round trips of this profile.
    assert.equal(await hold.seen('pong 2\n', 2_000), false, 'an echo crossed a blackholed link');
    await r.link.restore();
    // TCP retransmits on its own backoff: wait for the same connection to deliver.
    assert.ok(await hold.seen('pong 2\n', 60_000), hold.out);

    await r.link.cut('down');
    const down = await probe<{ error?: string }>(r.a, 'rtt', target, '1');
    assert.equal(down.error, 'ENETUNREACH');
    await r.link.restore();
    assert.ok((await probe<{ rttMs?: number[] }>(r.a, 'rtt', target, '1')).rttMs);

    await r.link.cut('reset');
    assert.ok(await hold.seen('error ECONNRESET', 30_000), hold.out);
    const reset = await probe<{ error?: string }>(r.b, 'rtt', `${ADDRESSES[0]}:${PORT}`, '1');
    assert.equal(reset.error, 'ECONNRESET');
    await r.link.restore();
    assert.ok((await probe<{ rttMs?: number[] }>(r.b, 'rtt', `${ADDRESSES[0]}:${PORT}`, '1')).rttMs);

    const other = await probe<{ error?: string }>(r.a, 'rtt', `${ADDRESSES[1]}:${PORT + 1}`, '1');
    assert.equal(other.error, 'ECONNREFUSED', 'only the forwarded ports cross the WAN');
  } finally {
    hold.close();
    await teardown(r);
  }
});

test('destroy() removes the middle namespace, the veths with their qdiscs, and the forwarders', async () => {
  const r = await rig(WAN_PROFILES['20m-100ms']);
  const pids = r.link.forwarderPids;
  assert.equal(pids.length, 2);
  const qdisc = await runProcess('tc', ['-n', r.a.name, 'qdisc', 'show', 'dev', r.link.a.dev]);
  assert.match(qdisc.stdout, /tbf/);
  const middle = r.link.middle.name;
  for (const s of r.servers) s.kill('SIGKILL');
  r.servers = [];
  await r.link.destroy();
  const names = (await runProcess('ip', ['netns', 'list'])).stdout;
  assert.ok(!names.includes(middle), names);
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/);
  // A veth end goes when the kernel's cleanup of the deleted middle namespace runs, a moment
  // after `ip netns del` returns (asynchronously, in a workqueue): wait for it, within a bound.
  for (const end of [r.link.a, r.link.b]) {
    let links = await end.ns.ip(['-o', 'link', 'show']);
    for (const until = Date.now() + 15_000; links.stdout.includes(end.dev) && Date.now() < until;) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      links = await end.ns.ip(['-o', 'link', 'show']);
    }
    assert.ok(!links.stdout.includes(end.dev), links.stdout);
  }
  await teardown(r);
  const after = (await runProcess('ip', ['netns', 'list'])).stdout;
  for (const ns of [r.a, r.b]) assert.ok(!after.includes(ns.name), after);
});
