import { parseArgs } from 'node:util';
import type { ApiClient } from './api-client.js';
import { formatBytes, printFields, printJson, printTable } from './output.js';
import { MamoriError } from '../core/mamori-error.js';

export const REPLICA_USAGE = `mamori replica <command>          replicas this site holds for its peers (the recovery site)
  list                                 state, points, chain length and bytes of each replica
  show ID                              one replica: its points, storage and what uses it
  delete ID [--force]                  delete its files and rows; refused while a VM made from it exists,
                                       another replica reads it, or its source still replicates into it
                                       (--force: only when the source site cannot be asked, gone for good)`;

export async function replicaCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori replica ${what}\n${REPLICA_USAGE}`);
  const [sub, ...args] = rest;
  const replica = (id: string): { path: { id: string } } => ({ path: { id } });
  switch (sub) {
    case 'list': {
      if (args.length !== 0) throw usage('list');
      const all = await api.get('/site-replicas');
      if (json) return printJson(all);
      return printTable(
        all.map((r) => ({
          id: r.id,
          vm: r.vmName,
          from: r.sourceSite,
          state: r.state,
          points: r.storage?.points ?? null,
          chain: r.storage?.chainLength ?? null,
          bytes: r.storage ? formatBytes(r.storage.bytes + r.storage.seedBytes) : null,
          newest: r.points?.at(-1)?.time ?? null,
        })),
        ['id', 'vm', 'from', 'state', 'points', 'chain', 'bytes', 'newest'],
      );
    }
    case 'show': {
      if (args.length !== 1) throw usage('show ID');
      const r = await api.get('/site-replicas/{id}', replica(args[0]!));
      if (json) return printJson(r);
      printFields({
        id: r.id,
        vm: `${r.vmName} (${r.sourceVmId})`,
        from: r.sourceSite,
        state: r.state,
        'promoted at': r.promotedAt,
        'last contact': r.lastContactAt,
        points: r.storage?.points,
        'chain length': r.storage?.chainLength,
        'bytes on disk': r.storage ? formatBytes(r.storage.bytes) : null,
        'seed bytes':
          (r.storage?.seedBytes ?? 0) > 0
            ? `${formatBytes(r.storage!.seedBytes)} (read through until its next point compacts it)`
            : null,
        journal: r.journal
          ? `${formatBytes(r.journal.bytes)}` +
            (r.journal.bytesPerSecond === null
              ? ' (its rate is known once it covers a minute)'
              : `, growing ${formatBytes(r.journal.bytesPerSecond)}/s: its ${r.journal.windowSeconds}s window needs ${formatBytes(r.journal.neededBytes ?? 0)} of the ${formatBytes(r.journal.availableBytes)} it has here${r.journal.fits === false ? ' (IT DOES NOT FIT)' : ''}`)
          : null,
        'used by':
          [
            ...(r.usedBy?.vms ?? []).map((v) => `VM ${v.name} (${v.state})`),
            ...(r.usedBy?.replicas ?? []).map((x) => `replica ${x}`),
          ].join(', ') || 'nothing',
      });
      const points = r.points ?? [];
      if (points.length > 0)
        printTable(
          points.map((p) => ({ ...p })),
          ['id', 'time', 'consistency'],
        );
      return;
    }
    case 'delete': {
      const { values, positionals } = parseArgs({
        args,
        strict: true,
        allowPositionals: true,
        options: { force: { type: 'boolean' } },
      });
      if (positionals.length !== 1) throw usage('delete ID [--force]');
      await api.delete('/site-replicas/{id}', {
        ...replica(positionals[0]!),
        query: values.force === true ? { force: 'true' } : {},
      });
      return json
        ? printJson({ deleted: positionals[0] })
        : void process.stdout.write(`replica ${positionals[0]} deleted (its files and records)\n`);
    }
    default:
      throw usage('list | show ID | delete ID');
  }
}
