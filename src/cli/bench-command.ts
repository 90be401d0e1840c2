import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { followJob } from './follow-job.js';
import { printJson, printTable } from './output.js';
import { asView, type StorageBenchResult } from './server-views.js';

export const BENCH_USAGE = `mamori bench storage [--mib N] [--seconds S]
                                     a qcow2 image, a raw image and RDMs (virtual, physical) on the
                                     same storage, measured inside a test guest: MB/s and 4 KiB IOPS`;

export async function benchCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  if (sub !== 'storage') throw new MamoriError('INVALID_INPUT', `usage: ${BENCH_USAGE}`);
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: { mib: { type: 'string' }, seconds: { type: 'string' } },
  });
  const int = (v: string | undefined, flag: string): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v))
      throw new MamoriError('INVALID_INPUT', `${flag} takes a whole number, not ${JSON.stringify(v)}`);
    return Number(v);
  };
  if (positionals.length > 0) throw new MamoriError('INVALID_INPUT', `usage: ${BENCH_USAGE}`);
  const mib = int(values.mib, '--mib');
  const seconds = int(values.seconds, '--seconds');
  const end = await followJob(
    api,
    await api.post('/bench/storage', {
      body: { ...(mib !== undefined ? { mib } : {}), ...(seconds !== undefined ? { seconds } : {}) },
    }),
    'measuring storage in a test guest',
    json,
  );
  if (end.state !== 'succeeded') {
    process.exitCode = 1;
    if (json) printJson(end);
    else process.stderr.write(`mamori: the storage benchmark ${end.state}: ${end.error?.message ?? ''}\n`);
    return;
  }
  const r = asView<StorageBenchResult>(end.result);
  if (json) return printJson(r);
  printTable(
    // In the order the server measured them (qcow2, raw, RDM virtual, RDM physical).
    Object.entries(r.kinds).map(([k, figures]) => ({ disk: k, ...figures })),
    ['disk', 'seq_read_mbps', 'seq_write_mbps', 'rand_read_iops', 'rand_write_iops'],
  );
  process.stdout.write(
    `\nRDM / qcow2: ${Object.entries(r.ratios)
      .map(([k, v]) => `${k}=${v}`)
      .join('  ')}\n`,
  );
}
