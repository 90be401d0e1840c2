import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printJson, printTable } from './output.js';

export const NETWORK_USAGE = `mamori network <command>        networks VM NICs attach to (besides the built-in user and none)
  create NAME --isolated             a bridge of its own with no uplink: VMs on it reach each other only
  create NAME --bridge BR            an existing host bridge (e.g. vmbr0)
  list | delete NAME

mamori mapping <command>        how a paired site's networks and pools map onto this (the recovery) site
  set --peer SITE network SOURCE TARGET --test TEST_NET   TEST_NET: an isolated network for test recoveries
  set --peer SITE pool SOURCE TARGET
  list [--peer SITE] | delete --peer SITE network|pool SOURCE`;

export async function networkCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori network ${what}\n${NETWORK_USAGE}`);
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { isolated: { type: 'boolean' }, bridge: { type: 'string' } },
      });
      if (positionals.length !== 1 || (values.isolated === true) === (values.bridge !== undefined))
        throw usage('create NAME --isolated | --bridge BR');
      const n = await api.post('/networks', {
        body: {
          name: positionals[0]!,
          kind: values.isolated ? 'isolated' : 'bridge',
          ...(values.bridge ? { bridge: values.bridge } : {}),
        },
      });
      return json ? printJson(n) : void process.stdout.write(`network ${n.name} (${n.kind}) on bridge ${n.bridge}\n`);
    }
    case 'list': {
      const all = await api.get('/networks');
      return json
        ? printJson(all)
        : printTable(
            all.map((n) => ({ ...n, bridge: n.bridge ?? '-' })),
            ['name', 'kind', 'bridge'],
          );
    }
    case 'delete':
      if (args.length !== 1) throw usage('delete NAME');
      await api.delete('/networks/{name}', { path: { name: args[0]! } });
      return json ? printJson({ deleted: args[0] }) : void process.stdout.write(`network ${args[0]} deleted\n`);
    default:
      throw usage('<command>');
  }
}

export async function mappingCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori mapping ${what}\n${NETWORK_USAGE}`);
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: { peer: { type: 'string' }, test: { type: 'string' } },
  });
  switch (sub) {
    case 'set': {
      const [kind, source, target] = positionals;
      if (!values.peer || positionals.length !== 3 || (kind !== 'network' && kind !== 'pool'))
        throw usage('set --peer SITE network|pool SOURCE TARGET [--test TEST_NET]');
      const m = await api.put('/mappings', {
        body: {
          peer: values.peer,
          kind,
          source: source!,
          target: target!,
          ...(values.test ? { testTarget: values.test } : {}),
        },
      });
      return json
        ? printJson(m)
        : void process.stdout.write(
            `${m.peer}'s ${m.kind} ${m.source} -> ${m.target}${m.testTarget ? ` (tests: ${m.testTarget})` : ''}\n`,
          );
    }
    case 'list': {
      const all = await api.get('/mappings', { query: values.peer ? { peer: values.peer } : {} });
      return json
        ? printJson(all)
        : printTable(
            all.map((m) => ({ ...m, test: m.testTarget ?? '-' })),
            ['peer', 'kind', 'source', 'target', 'test'],
          );
    }
    case 'delete': {
      const [kind, source] = positionals;
      if (!values.peer || positionals.length !== 2 || (kind !== 'network' && kind !== 'pool'))
        throw usage('delete --peer SITE network|pool SOURCE');
      await api.delete('/mappings/{peer}/{kind}/{source}', {
        path: { peer: values.peer, kind, source: source! },
      });
      return json
        ? printJson({ deleted: { peer: values.peer, kind, source } })
        : void process.stdout.write(`mapping of ${values.peer}'s ${kind} ${source} deleted\n`);
    }
    default:
      throw usage('<command>');
  }
}
