import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printFields, printJson, printTable } from './output.js';
import type { ResponseOf } from './api-types.js';
import { asView } from './server-views.js';

export const GROUP_USAGE = `mamori group <command>          protection groups: replicated VMs that recovery plans recover together
  create NAME --vm VM [--vm VM ...]   host-based: mamori replicates the VMs; all to one site
  create NAME --array ENTRY --device ID [--device ID ...] --to SITE [--rpo 15m] [--array-id ID] [--force]
                                      array-based: the array replicates the devices; the group
                                      protects every VM whose disks live on them; with --rpo mamori
                                      asks the array for a point on that RPO. Refused for an
                                      array 'mamori compat check' calls unsupported, unless --force
  list | show NAME
  add NAME VM | remove NAME VM        host-based groups
  sync NAME                           array-based: one array point now, sent to the peer array
  delete NAME                         the VMs stay replicated`;

export async function groupCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const group = (name: string): { path: { name: string } } => ({ path: { name } });
  const show = (g: ResponseOf<'/protection-groups/{name}', 'get'>): void =>
    json
      ? printJson(g)
      : printFields({
          name: g.name,
          kind: g.kind,
          'recovers at': g.peer,
          vms: g.vms.join(', ') || '-',
          ...(g.array
            ? {
                array: `${g.array.arrayId} (entry ${g.array.storage}), devices ${g.array.deviceIds.join(', ')}`,
                compatibility: `${g.array.forced ? 'UNSUPPORTED, forced: ' : ''}${g.array.compat}`,
                rpo:
                  g.array.rpoSeconds === null
                    ? "none (the array's schedule, or mamori group sync)"
                    : `${g.array.rpoSeconds} s${g.array.sync.rpoViolated ? ' (VIOLATED)' : ''}`,
                'last point': g.array.sync.lastPointAt
                  ? `${g.array.sync.lastPoint} at ${g.array.sync.lastPointAt} (lag ${g.array.sync.lagSec} s, ${g.array.sync.lastBytesSent} bytes sent)`
                  : '-',
                ...(g.array.sync.lastError
                  ? { 'last error': `${g.array.sync.lastError} (${g.array.sync.failures} failures in a row)` }
                  : {}),
                'not protected': g.array.problems.map((p) => `${p.vm}: ${p.reason}`).join('; ') || '-',
              }
            : {}),
          created: g.createdAt,
        });
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori group ${what}\n${GROUP_USAGE}`);
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: {
          vm: { type: 'string', multiple: true },
          array: { type: 'string' },
          device: { type: 'string', multiple: true },
          'array-id': { type: 'string' },
          to: { type: 'string' },
          force: { type: 'boolean' },
          rpo: { type: 'string' },
        },
      });
      if (positionals.length !== 1)
        throw usage('create NAME --vm VM [--vm VM ...] | create NAME --array ENTRY --device ID --to SITE');
      if (values.array !== undefined) {
        if (values.vm?.length) throw usage('create: --vm (host-based) and --array (array-based) do not go together');
        if (!values.device?.length || !values.to)
          throw usage('create NAME --array ENTRY --device ID [--device ID ...] --to SITE [--force]');
        return show(
          await api.post('/protection-groups', {
            body: {
              name: positionals[0]!,
              array: {
                storage: values.array,
                deviceIds: values.device,
                peer: values.to,
                ...(values['array-id'] ? { arrayId: values['array-id'] } : {}),
                ...(values.force ? { force: true } : {}),
                ...(values.rpo ? { rpo: values.rpo } : {}),
              },
            },
          }),
        );
      }
      if (!values.vm?.length) throw usage('create NAME --vm VM [--vm VM ...]');
      return show(await api.post('/protection-groups', { body: { name: positionals[0]!, vms: values.vm } }));
    }
    case 'sync': {
      if (args.length !== 1) throw usage('sync NAME');
      const r = asView<{ devices: { id: string; point: string; bytesSent: number }[] }>(
        await api.post('/protection-groups/{name}/sync', group(args[0]!)),
      );
      if (json) return printJson(r);
      return printTable(
        r.devices.map((d) => ({ device: d.id, point: d.point, sent: d.bytesSent })),
        ['device', 'point', 'sent'],
      );
    }
    case 'list': {
      const all = await api.get('/protection-groups');
      if (json) return printJson(all);
      if (all.length === 0)
        return void process.stdout.write("no protection groups; 'mamori group create NAME --vm VM' makes one\n");
      return printTable(
        all.map((g) => ({ name: g.name, kind: g.kind, 'recovers at': g.peer, vms: g.vms.join(', ') })),
        ['name', 'kind', 'recovers at', 'vms'],
      );
    }
    case 'show':
      if (args.length !== 1) throw usage('show NAME');
      return show(await api.get('/protection-groups/{name}', group(args[0]!)));
    case 'add':
      if (args.length !== 2) throw usage('add NAME VM');
      return show(await api.post('/protection-groups/{name}/vms', { ...group(args[0]!), body: { vm: args[1]! } }));
    case 'remove':
      if (args.length !== 2) throw usage('remove NAME VM');
      return show(await api.delete('/protection-groups/{name}/vms/{vm}', { path: { name: args[0]!, vm: args[1]! } }));
    case 'delete':
      if (args.length !== 1) throw usage('delete NAME');
      await api.delete('/protection-groups/{name}', group(args[0]!));
      if (json) return printJson({ deleted: args[0] });
      return void process.stdout.write(`protection group ${args[0]} deleted; its VMs stay replicated\n`);
    default:
      throw usage('<command>');
  }
}
