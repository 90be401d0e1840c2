import { parseArgs } from 'node:util';
import type { ApiClient } from './api-client.js';
import { formatBytes, printJson, printTable } from './output.js';
import { followJob } from './follow-job.js';
import { MamoriError } from '../core/mamori-error.js';
import { one } from './vm-commands.js';
import type { RequestBody } from './api-types.js';

export const DISK_USAGE = `mamori disk <command>
  create NAME --size SIZE [--format qcow2|raw] [--path PATH-IN-POOL]
  create NAME --size SIZE --array ENTRY --device ID [--array-id ID]
                                     on a replicated array device (array-based protection groups)
  create NAME --rdm DEVICE [--mode virtual|physical] [--shared]
  import NAME SOURCE [--format vmdk|vhd|vhdx|qcow2|raw] [--to qcow2|raw]
  list | show NAME | delete NAME`;

export async function diskCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          size: { type: 'string' },
          format: { type: 'string' },
          path: { type: 'string' },
          rdm: { type: 'string' },
          mode: { type: 'string' },
          shared: { type: 'boolean' },
          array: { type: 'string' },
          device: { type: 'string' },
          'array-id': { type: 'string' },
        },
      });
      const name = one(positionals, 'disk create NAME --size SIZE');
      const body: RequestBody<'/disks', 'post'> = { name };
      if (values.rdm) body['rdm'] = { device: values.rdm, mode: values.mode ?? 'virtual' };
      else {
        if (!values.size)
          throw new MamoriError(
            'INVALID_INPUT',
            'disk create needs --size SIZE (e.g. 1G), or --rdm DEVICE for a raw device mapping',
          );
        body['size'] = values.size;
        if (values.format) body['format'] = values.format;
        if (values.path) body['path'] = values.path;
        if ((values.array === undefined) !== (values.device === undefined))
          throw new MamoriError('INVALID_INPUT', 'a disk on an array device needs both --array ENTRY and --device ID');
        if (values.array)
          body['onArray'] = {
            storage: values.array,
            deviceId: values.device!,
            ...(values['array-id'] ? { arrayId: values['array-id'] } : {}),
          };
      }
      if (values.shared) body['shared'] = true;
      const d = await api.post('/disks', { body });
      return json
        ? printJson(d)
        : void process.stdout.write(
            `created disk ${d.name}: ${d.kind}${d.rdmMode ? ` (${d.rdmMode})` : ''} ${d.format} ${formatBytes(d.sizeBytes)} at ${d.path}\n`,
          );
    }
    case 'import': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { format: { type: 'string' }, to: { type: 'string' } },
      });
      if (positionals.length !== 2) throw new MamoriError('INVALID_INPUT', 'usage: mamori disk import NAME SOURCE');
      const [name, source] = positionals as [string, string];
      const body: RequestBody<'/disks/import', 'post'> = {
        name,
        source: source.startsWith('/') ? source : `${process.cwd()}/${source}`,
      };
      if (values.format) body['format'] = values.format;
      if (values.to) body['targetFormat'] = values.to;
      const job = await followJob(api, await api.post('/disks/import', { body }), `importing ${name}`, json);
      if (job.state === 'failed')
        throw new MamoriError('PROCESS_FAILED', `import of ${name} failed: ${job.error?.message ?? 'unknown error'}`);
      return json ? printJson(job) : void process.stdout.write(`imported ${source} as disk ${name}\n`);
    }
    case 'list': {
      const disks = await api.get('/disks');
      if (json) return printJson(disks);
      return printTable(
        disks.map((d) => ({ ...d, size: formatBytes(d.sizeBytes), mode: d.rdmMode })),
        ['name', 'kind', 'mode', 'format', 'size', 'shared', 'path'],
      );
    }
    case 'show': {
      const d = await api.get('/disks/{name}', { path: { name: one(rest, 'disk show NAME') } });
      return printJson(d);
    }
    case 'delete': {
      const name = one(rest, 'disk delete NAME');
      await api.delete('/disks/{name}', { path: { name } });
      return json ? printJson({ deleted: name }) : void process.stdout.write(`deleted disk ${name}\n`);
    }
    default:
      throw new MamoriError('INVALID_INPUT', `unknown disk command ${JSON.stringify(sub ?? '')}\n${DISK_USAGE}`);
  }
}
