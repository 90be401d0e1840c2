import { access, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AdapterClient } from './adapter-client.js';
import { REQUIRED_COMMANDS, type AdapterDevice, type AdapterResults } from './adapter-protocol.js';

/** Two scratch arrays and the replicated device pair on them, as the adapter's owner describes them. */
export interface ConformanceConfig {
  source: { connection: Record<string, string>; arrayId: string; deviceId: string };
  target: { connection: Record<string, string>; arrayId: string };
}

export interface ConformanceRow {
  step: string;
  result: 'pass' | 'fail' | 'skipped';
  detail: string;
  ms: number;
}

const MiB = 1024 * 1024;

/**
 * `mamori adapter test`: the full lifecycle against an adapter and two scratch arrays, each
 * response checked against the protocol's schemas (the client does that on every call) and
 * the data on the devices checked after each step that moves it: a file written at the
 * source is on the target after a sync, an incremental sync sends what changed and not the
 * device, a test copy is writable and its writes go nowhere, failover brings the data up
 * read-write, reverse replication carries the other side's writes back without a full send.
 * The first failing step ends the run (later steps depend on it) and says why.
 * Data checks need filesystems mounted on this host; volumes are checked by the protocol only.
 */
export async function runConformance(
  adapterPath: string,
  cfg: ConformanceConfig,
  onRow?: (row: ConformanceRow) => void,
): Promise<ConformanceRow[]> {
  const src = new AdapterClient(adapterPath, cfg.source.connection);
  const dst = new AdapterClient(adapterPath, cfg.target.connection);
  const rows: ConformanceRow[] = [];
  const files = new Map<string, Buffer>();
  let failed = false;
  let targetId = '';
  let caps: AdapterResults['queryCapabilities'] | null = null;

  const step = async (name: string, body: () => Promise<string>): Promise<void> => {
    const t0 = Date.now();
    let row: ConformanceRow;
    if (failed) row = { step: name, result: 'skipped', detail: 'an earlier step failed', ms: 0 };
    else {
      try {
        row = { step: name, result: 'pass', detail: await body(), ms: Date.now() - t0 };
      } catch (e) {
        failed = true;
        row = { step: name, result: 'fail', detail: (e as Error).message, ms: Date.now() - t0 };
      }
    }
    rows.push(row);
    onRow?.(row);
  };
  const check = (ok: boolean, why: string): void => {
    if (!ok) throw new Error(why);
  };
  const device = async (client: AdapterClient, arrayId: string, id: string): Promise<AdapterDevice> => {
    const d = (await client.call('discoverDevices', { arrayId })).devices.find((x) => x.id === id);
    if (!d) throw new Error(`array ${arrayId} lists no device ${id}`);
    return d;
  };
  const put = async (dir: string | null, name: string, bytes: number): Promise<void> => {
    check(dir !== null, 'the device has no path on this host to write to');
    const data = randomBytes(bytes);
    await writeFile(join(dir!, name), data);
    files.set(name, data);
  };
  /** Every file written so far is in `dir`, byte for byte (or absent where `absent` says). */
  const holds = async (dir: string | null, where: string, absent: string[] = []): Promise<void> => {
    check(dir !== null, `${where} has no path on this host to read`);
    for (const [name, data] of files) {
      const got = await readFile(join(dir!, name)).catch(() => null);
      if (absent.includes(name))
        check(got === null, `${where} holds ${name}, which was written where it must not reach`);
      else
        check(
          got !== null && got.equals(data),
          `${where} does not hold ${name} as written${got === null ? ' (missing)' : ' (its bytes differ)'}`,
        );
    }
  };
  const writable = async (dir: string | null): Promise<boolean> => {
    if (dir === null) return false;
    return writeFile(join(dir, '.mamori-conformance-probe'), 'x').then(
      () => true,
      () => false,
    );
  };
  const need = (command: string): void =>
    check(caps!.commands.includes(command as never), `the adapter does not declare ${command}, which this step needs`);

  await step('queryInfo', async () => {
    const info = await src.call('queryInfo', {});
    check(info.protocolVersions.includes(1), `it speaks protocol versions ${info.protocolVersions.join(', ')}, not 1`);
    return `${info.vendor} ${info.name} ${info.version}`;
  });
  await step('queryCapabilities', async () => {
    caps = await src.capabilities();
    const missing = REQUIRED_COMMANDS.filter((c) => !caps!.commands.includes(c));
    check(missing.length === 0, `it does not declare the required commands ${missing.join(', ')}`);
    return `${caps.commands.length} commands; test failover ${caps.features.testFailover}, reverse ${caps.features.reverseReplication}`;
  });
  await step('queryConnectionParameters', async () => {
    const params = (await src.call('queryConnectionParameters', {})).parameters;
    for (const side of [cfg.source, cfg.target]) {
      const missing = params.filter((p) => p.required && !(p.name in side.connection)).map((p) => p.name);
      check(missing.length === 0, `the configuration lacks required connection parameters ${missing.join(', ')}`);
    }
    return params.map((p) => p.name).join(', ') || 'none';
  });
  await step('queryErrorDefinitions', async () => {
    const codes = (await src.call('queryErrorDefinitions', {})).errors.map((e) => e.code);
    check(new Set(codes).size === codes.length, 'an error code is declared twice');
    return `${codes.length} codes`;
  });
  await step('discoverArrays', async () => {
    for (const [client, id] of [
      [src, cfg.source.arrayId],
      [dst, cfg.target.arrayId],
    ] as const) {
      const arrays = (await client.call('discoverArrays', {})).arrays;
      check(
        arrays.some((a) => a.id === id),
        `array ${id} is not among those discovered (${arrays.map((a) => a.id).join(', ') || 'none'})`,
      );
    }
    return `${cfg.source.arrayId}, ${cfg.target.arrayId}`;
  });
  await step('discoverDevices', async () => {
    const d = await device(src, cfg.source.arrayId, cfg.source.deviceId);
    if (d.path !== null)
      await access(d.path).catch(() => {
        throw new Error(`device ${d.id} claims the path ${d.path}, which does not exist on this host`);
      });
    check(
      d.peer !== null && d.peer.arrayId === cfg.target.arrayId,
      `device ${d.id} names no peer on ${cfg.target.arrayId}`,
    );
    check(d.role === 'source', `device ${d.id} is ${d.role}, not a source`);
    targetId = d.peer!.deviceId;
    return `${d.id} (${d.kind}) -> ${cfg.target.arrayId}/${targetId}`;
  });
  await step('syncOnce (first)', async () => {
    await put((await device(src, cfg.source.arrayId, cfg.source.deviceId)).path, 'mamori-conformance-1.bin', MiB);
    const r = (await src.call('syncOnce', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] }))
      .devices[0]!;
    const status = (
      await src.call('querySyncStatus', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] })
    ).devices[0]!;
    check(
      status.inSync && status.peerLastPoint === r.point,
      `after syncOnce the peer holds ${status.peerLastPoint}, not ${r.point}`,
    );
    return `point ${r.point}, ${r.bytesSent} bytes`;
  });
  await step('syncOnce (incremental, 2 MiB changed)', async () => {
    await put((await device(src, cfg.source.arrayId, cfg.source.deviceId)).path, 'mamori-conformance-2.bin', 2 * MiB);
    const r = (await src.call('syncOnce', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] }))
      .devices[0]!;
    check(
      r.bytesSent >= 2 * MiB && r.bytesSent <= 3 * MiB,
      `it sent ${r.bytesSent} bytes for 2 MiB changed: an incremental sync sends what changed, not the device`,
    );
    return `${r.bytesSent} bytes`;
  });
  await step('testFailoverStart', async () => {
    need('testFailoverStart');
    const r = (await dst.call('testFailoverStart', { arrayId: cfg.target.arrayId, deviceIds: [targetId] })).devices[0]!;
    await holds(r.testDevice.path, 'the test copy');
    check(await writable(r.testDevice.path), 'the test copy is not writable');
    await writeFile(join(r.testDevice.path!, 'mamori-conformance-test-only.bin'), 'written in a test failover');
    return `${r.testDevice.id} at ${r.point}`;
  });
  await step('testFailoverStop', async () => {
    need('testFailoverStop');
    const r = (await dst.call('testFailoverStop', { arrayId: cfg.target.arrayId, deviceIds: [targetId] })).devices[0]!;
    check(r.removed, 'the test copy was not removed');
    return 'removed';
  });
  await step('prepareFailover', async () => {
    need('prepareFailover');
    await put((await device(src, cfg.source.arrayId, cfg.source.deviceId)).path, 'mamori-conformance-3.bin', 64 * 1024);
    const r = (await src.call('prepareFailover', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] }))
      .devices[0]!;
    check(
      !(await writable((await device(src, cfg.source.arrayId, cfg.source.deviceId)).path)),
      'the source is still writable after prepareFailover',
    );
    return `last point ${r.point}; source read-only`;
  });
  await step('failover', async () => {
    need('failover');
    const r = (await dst.call('failover', { arrayId: cfg.target.arrayId, deviceIds: [targetId] })).devices[0]!;
    await holds(r.path, 'the failed-over device');
    check(
      await readFile(join(r.path!, 'mamori-conformance-test-only.bin')).then(
        () => false,
        () => true,
      ),
      'what the test failover wrote reached the failed-over device',
    );
    check(await writable(r.path), 'the failed-over device is not writable');
    await put(r.path, 'mamori-conformance-4.bin', MiB);
    return `${targetId} read-write at ${r.point}`;
  });
  await step('prepareReverseReplication', async () => {
    need('prepareReverseReplication');
    const r = (
      await src.call('prepareReverseReplication', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] })
    ).devices[0]!;
    return `common point ${r.commonPoint}`;
  });
  await step('reverseReplication', async () => {
    need('reverseReplication');
    const r = (await dst.call('reverseReplication', { arrayId: cfg.target.arrayId, deviceIds: [targetId] }))
      .devices[0]!;
    check(
      r.peer.arrayId === cfg.source.arrayId && r.peer.deviceId === cfg.source.deviceId,
      `it replicates to ${r.peer.arrayId}/${r.peer.deviceId}, not back to the old source`,
    );
    const s = (await dst.call('syncOnce', { arrayId: cfg.target.arrayId, deviceIds: [targetId] })).devices[0]!;
    check(
      s.bytesSent < 3 * MiB,
      `the sync back sent ${s.bytesSent} bytes for ~1 MiB changed: reverse replication must not resend the device`,
    );
    // A target is often not exposed on its host (a LUN, an unmounted dataset): its data is
    // read through a test copy of it, as an operator would check a replica.
    const old = await device(src, cfg.source.arrayId, cfg.source.deviceId);
    if (old.path !== null) await holds(old.path, 'the old source');
    else if (caps!.commands.includes('testFailoverStart') && caps!.commands.includes('testFailoverStop')) {
      const copy = (
        await src.call('testFailoverStart', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] })
      ).devices[0]!;
      try {
        await holds(copy.testDevice.path, 'a test copy of the old source');
      } finally {
        await src.call('testFailoverStop', { arrayId: cfg.source.arrayId, deviceIds: [cfg.source.deviceId] });
      }
    } else
      throw new Error('the old source is neither exposed here nor can it be test-copied: its data cannot be checked');
    return `${s.bytesSent} bytes back, from ${r.commonPoint}; the old source holds every file`;
  });
  await step('restoreReplication', async () => {
    need('restoreReplication');
    const r = (await dst.call('restoreReplication', { arrayId: cfg.target.arrayId, deviceIds: [targetId] }))
      .devices[0]!;
    const status = (await dst.call('querySyncStatus', { arrayId: cfg.target.arrayId, deviceIds: [targetId] }))
      .devices[0]!;
    check(status.inSync, 'replication is not in sync after restoreReplication');
    return `in sync at ${r.point}`;
  });
  return rows;
}

/** The pass/fail table `mamori adapter test` prints. */
export function conformanceTable(rows: ConformanceRow[]): string {
  const w = Math.max(...rows.map((r) => r.step.length), 4);
  const lines = rows.map((r) => `${r.step.padEnd(w)}  ${r.result.toUpperCase().padEnd(7)}  ${r.detail}`);
  const passed = rows.filter((r) => r.result === 'pass').length;
  return `${'step'.padEnd(w)}  result   detail\n${lines.join('\n')}\n${passed} passed, ${rows.filter((r) => r.result === 'fail').length} failed, ${rows.filter((r) => r.result === 'skipped').length} skipped\n`;
}
