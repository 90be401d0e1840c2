import { parseArgs } from 'node:util';
import type { ApiClient } from './api-client.js';
import { formatBytes, printFields, printJson, printTable } from './output.js';
import { MamoriError } from '../core/mamori-error.js';
import { int, one } from './vm-commands.js';
import type { RequestBody } from './api-types.js';
import { asView, type CycleStats, type WriteLogReport } from './server-views.js';

export const REPLICATE_USAGE = `mamori replicate <command>
  enable VM --to SITE --rpo 30s [--points 24] [--bandwidth 50M]
                          protect a VM on a paired site (RPO 1s..24h; --bandwidth caps this VM
                          alone, in bytes/s; the link's shared cap: mamori site link SITE --bandwidth)
  enable VM --to SITE --continuous [--journal 4h] [--checkpoint 1s] [--app-checkpoint 15m|off] [--rpo 10s]
                          journal every write at the recovery site: any point in time in the window
  status [VM] | points VM [--between T1 T2] | verify VM [--point ID | --at T]
                          status: lag, and whether the VM's cycle runs or waits in its link's queue (#1 next)
  sync-now VM | pause VM | resume VM
  disable VM [--delete-replica]  stop replicating; --delete-replica has the recovery site delete the replica`;

export async function replicateCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const [sub, ...rest] = argv;
  const vmPath = (name: string): { path: { name: string } } => ({ path: { name } });
  switch (sub) {
    case 'enable': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          to: { type: 'string' },
          rpo: { type: 'string' },
          points: { type: 'string' },
          bandwidth: { type: 'string' },
          continuous: { type: 'boolean' },
          journal: { type: 'string' },
          checkpoint: { type: 'string' },
          'app-checkpoint': { type: 'string' },
        },
      });
      const vm = one(positionals, 'replicate enable VM --to SITE --rpo 30s');
      if (!values.to || (!values.rpo && values.continuous !== true))
        throw new MamoriError(
          'INVALID_INPUT',
          'usage: mamori replicate enable VM --to SITE --rpo 30s [--points 24], or --continuous [--journal 4h] [--checkpoint 1s] [--app-checkpoint 15m|off]',
        );
      const body: RequestBody<'/vms/{name}/replication', 'post'> = { to: values.to };
      if (values.rpo !== undefined) body['rpo'] = values.rpo;
      if (values.continuous === true) body['continuous'] = true;
      if (values.journal !== undefined) body['journal'] = values.journal;
      if (values.checkpoint !== undefined) body['checkpoint'] = values.checkpoint;
      if (values['app-checkpoint'] !== undefined) body['appCheckpoint'] = values['app-checkpoint'];
      if (values.points !== undefined) body['points'] = int(values.points, '--points');
      if (values.bandwidth !== undefined) body['bandwidth'] = values.bandwidth;
      const s = await api.post('/vms/{name}/replication', { ...vmPath(vm), body });
      return json
        ? printJson(s)
        : void process.stdout.write(
            s.continuous !== null && s.continuous !== undefined
              ? `replicating ${vm} to ${s.to} continuously: a checkpoint every ${s.continuous.checkpointSeconds}s` +
                  `${s.continuous.appCheckpointSeconds !== null ? ` (application-consistent every ${s.continuous.appCheckpointSeconds}s)` : ''}, ` +
                  `a journal of ${s.continuous.journalSeconds}s; cycles keep an RPO of ${s.rpoSeconds}s while it is down\n`
              : `replicating ${vm} to ${s.to} with an RPO of ${s.rpoSeconds}s, keeping ${s.points} points\n`,
          );
    }
    case 'status': {
      if (rest.length === 0) {
        const all = await api.get('/replication');
        if (json) return printJson(all);
        return printTable(
          all.map((s) => ({
            ...s,
            rpo: `${s.rpoSeconds}s`,
            lag: s.lagSeconds === null ? null : `${s.lagSeconds}s${s.rpoViolated ? ' RPO VIOLATED' : ''}`,
            points: s.replica?.points ?? null,
            stored: s.replica ? formatBytes(s.replica.bytes + s.replica.seedBytes) : null,
            cycle: cycleState(s),
          })),
          ['vm', 'to', 'state', 'rpo', 'lag', 'cycle', 'lastPointAt', 'points', 'stored', 'failures'],
        );
      }
      const s = await api.get('/vms/{name}/replication', vmPath(one(rest, 'replicate status [VM]')));
      if (json) return printJson(s);
      return printFields({
        vm: s.vm,
        to: s.to,
        state: s.state,
        rpo: `${s.rpoSeconds}s`,
        lag: s.lagSeconds === null ? 'no point yet' : `${s.lagSeconds}s${s.rpoViolated ? ' (RPO VIOLATED)' : ''}`,
        'RPO violated since': s.rpoViolatedSince,
        'last point': s.lastPointAt,
        'next cycle': s.nextCycleAt,
        cycle: cycleState(s),
        failures: s.failures,
        'last error': s.lastError,
        'replica storage': s.replica
          ? `${s.replica.points} points, chain of ${s.replica.chainLength} layers, ${formatBytes(s.replica.bytes)} on disk${s.replica.seedBytes > 0 ? ` + ${formatBytes(s.replica.seedBytes)} of seed` : ''}`
          : null,
        'last cycle': cycleText(s.lastCycle ? asView<CycleStats>(s.lastCycle) : null),
        ...(s.continuous
          ? {
              continuous:
                `a checkpoint every ${s.continuous.checkpointSeconds}s` +
                `${s.continuous.appCheckpointSeconds !== null ? ` (application-consistent every ${s.continuous.appCheckpointSeconds}s)` : ''}` +
                `, a journal of ${s.continuous.journalSeconds}s`,
              journal: s.journal
                ? `${s.journal.state}${s.journal.shippedAt ? `, recovery site holds up to ${s.journal.shippedAt}` : ''}` +
                  `${s.journal.backlogBytes > 0 ? `, ${formatBytes(s.journal.backlogBytes)} waiting` : ''}` +
                  `${s.journal.group ? `, checkpoints shared with group ${s.journal.group}` : ''}` +
                  `${s.journal.error ? ` (${s.journal.error})` : ''}` +
                  `${s.journal.appCheckpointAt ? `; application-consistent at ${s.journal.appCheckpointAt}` : ''}` +
                  `${s.journal.appCheckpointError ? `; last freeze failed: ${s.journal.appCheckpointError}` : ''}`
                : 'not running (replication paused or the VM stopped: cycles protect it)',
            }
          : {}),
      });
    }
    case 'sync-now':
    case 'pause':
    case 'resume': {
      const action = sub === 'sync-now' ? 'sync' : sub;
      const s = await api.post(`/vms/{name}/replication/${action}`, vmPath(one(rest, `replicate ${sub} VM`)));
      return json
        ? printJson(s)
        : void process.stdout.write(`${s.vm}: ${s.state}, last point ${s.lastPointAt ?? 'none'}\n`);
    }
    case 'disable': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { 'delete-replica': { type: 'boolean' } },
      });
      const vm = one(positionals, 'replicate disable VM [--delete-replica]');
      const del = values['delete-replica'] === true;
      await api.delete('/vms/{name}/replication', { ...vmPath(vm), query: del ? { deleteReplica: 'true' } : {} });
      return json
        ? printJson({ disabled: vm, replicaDeleted: del })
        : void process.stdout.write(
            `replication of ${vm} disabled; ${del ? 'the recovery site deleted the replica' : "the replica stays at the recovery site (delete it there with 'mamori replica delete ID')"}\n`,
          );
    }
    case 'points': {
      // --between T1 T2: a continuous replica's points in time (journal checkpoints) in that window.
      const at = rest.indexOf('--between');
      if (at >= 0) {
        const [from, to] = [rest[at + 1], rest[at + 2]];
        if (from === undefined || to === undefined || from.startsWith('--') || to.startsWith('--'))
          throw new MamoriError('INVALID_INPUT', 'usage: replicate points VM --between T1 T2 (ISO times)');
        const vm = one([...rest.slice(0, at), ...rest.slice(at + 3)], 'replicate points VM --between T1 T2');
        const checkpoints = await api.get('/vms/{name}/replication/checkpoints', {
          ...vmPath(vm),
          query: { from, to },
        });
        const rows = checkpoints.map((c) => ({ ...c, consistency: c.applicationConsistent ? 'application' : 'crash' }));
        return json ? printJson(checkpoints) : printTable(rows, ['time', 'seq', 'consistency']);
      }
      const points = await api.get('/vms/{name}/replication/points', vmPath(one(rest, 'replicate points VM')));
      return json ? printJson(points) : printTable(points, ['id', 'time', 'consistency']);
    }
    case 'verify': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { point: { type: 'string' }, at: { type: 'string' } },
      });
      const out = await api.post('/vms/{name}/replication/verify', {
        ...vmPath(one(positionals, 'replicate verify VM [--point ID | --at T]')),
        body: { ...(values.point ? { pointId: values.point } : {}), ...(values.at ? { at: values.at } : {}) },
      });
      const report = asView<WriteLogReport>(out.report);
      if (json) printJson(out);
      else
        printFields({
          point: `${out.point?.id} (${out.point?.time})`,
          records: report.records,
          'last sequence': report.lastSequence,
          gaps: report.gaps.length,
          torn: report.tornCount,
          verdict: report.consistent ? 'consistent (gap-free prefix)' : 'NOT CONSISTENT',
        });
      if (!report.consistent) process.exitCode = 1;
      return;
    }
    default:
      throw new MamoriError(
        'INVALID_INPUT',
        `unknown replicate command ${JSON.stringify(sub ?? '')}\n${REPLICATE_USAGE}`,
      );
  }
}

function cycleText(c: CycleStats | null): string | null {
  if (!c) return null;
  return `${c.mode}, ${formatBytes(c.bytesSent)} sent in ${c.durationMs} ms (${formatBytes(c.throughputBps)}/s)`;
}

/** The VM's cycle now: sending, queued for a slot on its peer link (and where), or waiting for its time. */
function cycleState(s: { cycle: 'running' | 'queued' | 'idle'; queuePlace: number | null; to: string }): string {
  if (s.cycle === 'running') return 'running';
  if (s.cycle === 'queued') return `queued #${s.queuePlace ?? '?'} on the link to ${s.to}`;
  return '-';
}
