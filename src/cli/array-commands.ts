import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printJson, printTable } from './output.js';
import { asView, type AdapterDevice, type CompatReportRow, type StorageArrayView } from './server-views.js';

export const ARRAY_USAGE = `mamori array <command>          storage arrays this site reaches through an adapter (docs/adapters.md)
  add NAME --adapter zfs|PATH [--connection KEY=VALUE ...]   kept only if the adapter answers
  list | devices NAME | remove NAME

mamori compat <command>         the compatibility guide (compat/guide.json)
  search [--adapter A] [--array MODEL]   tested adapter and array pairings (no site needed)
  check                                  each configured array: supported or not, and why`;

export async function arrayCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori array ${what}\n${ARRAY_USAGE}`);
  switch (sub) {
    case 'add': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { adapter: { type: 'string' }, connection: { type: 'string', multiple: true } },
      });
      if (positionals.length !== 1 || !values.adapter)
        throw usage('add NAME --adapter zfs|PATH [--connection KEY=VALUE ...]');
      const connection: Record<string, string> = {};
      for (const kv of values.connection ?? []) {
        const i = kv.indexOf('=');
        if (i <= 0) throw usage(`add NAME --adapter A --connection KEY=VALUE (not ${JSON.stringify(kv)})`);
        connection[kv.slice(0, i)] = kv.slice(i + 1);
      }
      const a = asView<StorageArrayView>(
        await api.post('/arrays', { body: { name: positionals[0]!, adapter: values.adapter, connection } }),
      );
      return json
        ? printJson(a)
        : void process.stdout.write(
            `${a.name}: ${a.arrays.map((x) => `${x.id} (${x.vendor} ${x.model} ${x.softwareVersion})`).join(', ')}\n`,
          );
    }
    case 'list': {
      const all = asView<StorageArrayView[]>(await api.get('/arrays'));
      return json
        ? printJson(all)
        : printTable(
            all.map((a) => ({
              ...a,
              connection: Object.entries(a.connection)
                .map(([k, v]) => `${k}=${v}`)
                .join(' '),
            })),
            ['name', 'adapter', 'connection'],
          );
    }
    case 'devices': {
      if (args.length !== 1) throw usage('devices NAME');
      const all = asView<{ arrayId: string; devices: AdapterDevice[] }[]>(
        await api.get('/arrays/{name}/devices', { path: { name: args[0]! } }),
      );
      if (json) return printJson(all);
      return printTable(
        all.flatMap((a) =>
          a.devices.map((d) => ({
            array: a.arrayId,
            device: d.id,
            kind: d.kind,
            role: d.role,
            peer: d.peer ? `${d.peer.arrayId}/${d.peer.deviceId}` : '-',
            path: d.path ?? '-',
          })),
        ),
        ['array', 'device', 'kind', 'role', 'peer', 'path'],
      );
    }
    case 'remove': {
      if (args.length !== 1) throw usage('remove NAME');
      await api.delete('/arrays/{name}', { path: { name: args[0]! } });
      return json ? printJson({ removed: args[0] }) : void process.stdout.write(`removed ${args[0]}\n`);
    }
    default:
      throw usage('<command>');
  }
}

/** `compat check` asks the site (it holds the arrays); `compat search` reads the guide here. */
export async function compatCheckCommand(api: ApiClient, json: boolean): Promise<void> {
  const rows = asView<CompatReportRow[]>(await api.get('/compat/check'));
  // A script can act on the exit status alone: 1 when any array is not supported.
  if (rows.some((r) => !r.supported)) process.exitCode = 1;
  if (json) return printJson(rows);
  printTable(
    rows.map((r) => ({ ...r, array: `${r.storage}/${r.arrayId}`, supported: r.supported ? 'yes' : 'NO' })),
    ['array', 'model', 'softwareVersion', 'adapter', 'adapterVersion', 'supported', 'reason'],
  );
}
