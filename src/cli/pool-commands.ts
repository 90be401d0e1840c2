import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import type { Job, RequestBody } from './api-types.js';
import {
  asView,
  type DesktopAssigned,
  type DesktopFreed,
  type DesktopSessionStarted,
  type PersistentDisksSwapped,
  type PoolView,
} from './server-views.js';
import { formatBytes, printFields, printJson, printTable } from './output.js';
import { followJob } from './follow-job.js';
import { int } from './vm-commands.js';

export const POOL_USAGE = `mamori pool <command>           desktop pools of linked clones (View Composer)
  create POOL --master VM --snapshot SNAP --size N --name 'desk-{n}'
         [--spare K] [--persistent-disk SIZE] [--disposable-disk SIZE] [--storage A,B]
         [--command CMD ...] [--license-command CMD | --kms-host HOST[:PORT]] [--license-timeout SEC]
         [--skip-license-activation] [--concurrency N]
         [--ip dhcp | --ip-range FIRST-LAST/PREFIX [--gateway IP] [--dns IP,IP]]
                                     a replica of SNAP per storage pool; each desktop an overlay on it,
                                     customized at first boot (hostname, machine-id, SSH keys, commands,
                                     then licence activation: a Linux registration command, or KMS
                                     for Windows masters, told from the snapshot's disks);
                                     --ip/--ip-range: the first NIC's address (DHCP, or one of
                                     the range each, never two desktops the same)
  list | show POOL                   desktops, their state and own changes, storage saved
  refresh POOL [DESKTOP ...] [--force]   discard desktops' changes; persistent disks stay
  recompose POOL --snapshot SNAP [--force]   desktops rebuilt on another snapshot of the master
  rebalance POOL [--storage A,B] [--force]   spread desktops over storage pools by free space
  resize POOL --size N [--force]     grow, or shrink from the highest numbers
  move-persistent POOL --from A --to B   A's user data disk goes to B, B's to A (both stopped)
  assign POOL DESKTOP USER | unassign POOL DESKTOP
                                     a dedicated desktop; --spare K keeps K free ones powered on
                                     (free: not assigned, no session); spares above K power off
  session-start POOL DESKTOP USER | session-end POOL DESKTOP
                                     a broker reports a user's session: the desktop is in use
  resume POOL                        a failed operation run again from where it stopped
                                     (one a server stop cut resumes by itself at start)
  delete POOL                        desktops (and their persistent disks), then the replicas`;

export async function poolCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const pool = (name: string): { path: { name: string } } => ({ path: { name } });
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori pool ${what}\n${POOL_USAGE}`);
  const follow = async (job: Job, label: string): Promise<void> => {
    const end = await followJob(api, job, label, json);
    if (json) {
      if (end.state !== 'succeeded') process.exitCode = 1;
      return printJson(end);
    }
    if (end.state !== 'succeeded')
      throw new MamoriError('PROCESS_FAILED', `${label} failed: ${end.error?.message ?? 'unknown error'}`);
    process.stdout.write(`${label}: done ${JSON.stringify(end.result)}\n`);
  };
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: {
          master: { type: 'string' },
          snapshot: { type: 'string' },
          size: { type: 'string' },
          name: { type: 'string' },
          spare: { type: 'string' },
          'persistent-disk': { type: 'string' },
          'disposable-disk': { type: 'string' },
          storage: { type: 'string' },
          command: { type: 'string', multiple: true },
          'license-command': { type: 'string' },
          'kms-host': { type: 'string' },
          'license-timeout': { type: 'string' },
          'skip-license-activation': { type: 'boolean' },
          concurrency: { type: 'string' },
          ip: { type: 'string' },
          'ip-range': { type: 'string' },
          gateway: { type: 'string' },
          dns: { type: 'string' },
        },
      });
      if (positionals.length !== 1 || !values.master || !values.snapshot || !values.size || !values.name)
        throw usage("create POOL --master VM --snapshot SNAP --size N --name 'desk-{n}'");
      const body: RequestBody<'/pools', 'post'> = {
        name: positionals[0]!,
        master: values.master,
        snapshot: values.snapshot,
        size: int(values.size, '--size'),
        namePattern: values.name,
      };
      if (values.spare !== undefined) body['spare'] = int(values.spare, '--spare');
      if (values['persistent-disk']) body['persistentDisk'] = values['persistent-disk'];
      if (values['disposable-disk']) body['disposableDisk'] = values['disposable-disk'];
      if (values.storage)
        body['storage'] = values.storage
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
      if (values.command?.length) body['commands'] = values.command;
      if (values['license-command']) body['licenseCommand'] = values['license-command'];
      if (values['kms-host'] !== undefined) body['kmsHost'] = values['kms-host'];
      if (values['license-timeout'] !== undefined)
        body['licenseTimeoutSec'] = int(values['license-timeout'], '--license-timeout');
      if (values['skip-license-activation']) body['skipLicenseActivation'] = true;
      if (values.concurrency !== undefined) body['concurrency'] = int(values.concurrency, '--concurrency');
      if (values.ip !== undefined && values['ip-range'] !== undefined)
        throw usage('create ... --ip dhcp | --ip-range FIRST-LAST/PREFIX (one of the two)');
      if (values.ip !== undefined && values.ip !== 'dhcp')
        throw usage('create ... --ip dhcp (or --ip-range FIRST-LAST/PREFIX for static addresses)');
      if ((values.gateway !== undefined || values.dns !== undefined) && values['ip-range'] === undefined)
        throw usage(
          'create ... --ip-range FIRST-LAST/PREFIX [--gateway IP] [--dns IP,IP] (a gateway and DNS go with static addresses)',
        );
      if (values.ip === 'dhcp') body['network'] = { mode: 'dhcp' };
      if (values['ip-range'] !== undefined) {
        body['network'] = {
          mode: 'static',
          range: values['ip-range'],
          ...(values.gateway ? { gateway: values.gateway } : {}),
          ...(values.dns
            ? {
                dns: values.dns
                  .split(',')
                  .map((x) => x.trim())
                  .filter(Boolean),
              }
            : {}),
        };
      }
      return follow(await api.post('/pools', { body }), `provisioning pool ${positionals[0]}`);
    }
    case 'list': {
      const all = await api.get('/pools');
      if (json) return printJson(all);
      if (all.length === 0)
        return void process.stdout.write(
          "no desktop pools; 'mamori pool create POOL --master VM --snapshot SNAP --size 10 --name desk-{n}' makes one\n",
        );
      return printTable(all, ['name', 'state', 'desktops', 'size', 'master', 'snapshot']);
    }
    case 'show': {
      if (args.length !== 1) throw usage('show POOL');
      const p = asView<PoolView>(await api.get('/pools/{name}', pool(args[0]!)));
      if (json) return printJson(p);
      printFields({
        pool: `${p.name} (${p.state}${p.message ? `: ${p.message}` : ''})`,
        master: `${p.spec.master.name} @ ${p.spec.snapshot}`,
        replicas: p.replicas
          .map(
            (r) =>
              `${r.storage}: ${formatBytes(r.sizeBytes)}${r.linked ? ` (the master's snapshot layer, linked)` : ''} (${r.desktops} desktops)`,
          )
          .join('; '),
        storage:
          `${formatBytes(p.storage.usedBytes)} used${p.storage.replicasSharedBytes > 0 ? ` (${formatBytes(p.storage.replicasSharedBytes)} more shared with the master)` : ''}, ` +
          `${formatBytes(p.storage.savedBytes)} saved against ${formatBytes(p.storage.fullCopiesBytes)} of full copies`,
      });
      printTable(
        p.desktops.map((d) => ({
          desktop: d.name,
          vm: d.vmState,
          state: d.state,
          use: d.session ? `session ${d.session.user}` : d.user ? `assigned ${d.user}` : '',
          address: d.address ?? '',
          own: formatBytes(d.ownBytes),
          storage: d.storage,
          message: d.message ?? '',
        })),
        ['desktop', 'vm', 'state', 'use', 'address', 'own', 'storage', 'message'],
      );
      return;
    }
    case 'refresh': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { force: { type: 'boolean' } },
      });
      if (positionals.length < 1) throw usage('refresh POOL [DESKTOP ...] [--force]');
      const [name, ...desktops] = positionals;
      return follow(
        await api.post('/pools/{name}/refresh', {
          ...pool(name!),
          body: { ...(desktops.length ? { desktops } : {}), ...(values.force ? { force: true } : {}) },
        }),
        `refreshing pool ${name}`,
      );
    }
    case 'recompose': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { snapshot: { type: 'string' }, force: { type: 'boolean' } },
      });
      if (positionals.length !== 1 || !values.snapshot) throw usage('recompose POOL --snapshot SNAP [--force]');
      return follow(
        await api.post('/pools/{name}/recompose', {
          ...pool(positionals[0]!),
          body: { snapshot: values.snapshot, ...(values.force ? { force: true } : {}) },
        }),
        `recomposing pool ${positionals[0]}`,
      );
    }
    case 'rebalance': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { storage: { type: 'string' }, force: { type: 'boolean' } },
      });
      if (positionals.length !== 1) throw usage('rebalance POOL [--storage A,B] [--force]');
      const body = {
        ...(values.storage
          ? {
              storage: values.storage
                .split(',')
                .map((x) => x.trim())
                .filter(Boolean),
            }
          : {}),
        ...(values.force ? { force: true } : {}),
      };
      return follow(
        await api.post('/pools/{name}/rebalance', { ...pool(positionals[0]!), body }),
        `rebalancing pool ${positionals[0]}`,
      );
    }
    case 'resize': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { size: { type: 'string' }, force: { type: 'boolean' } },
      });
      if (positionals.length !== 1 || !values.size) throw usage('resize POOL --size N [--force]');
      return follow(
        await api.post('/pools/{name}/resize', {
          ...pool(positionals[0]!),
          body: { size: int(values.size, '--size'), ...(values.force ? { force: true } : {}) },
        }),
        `resizing pool ${positionals[0]}`,
      );
    }
    case 'move-persistent': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { from: { type: 'string' }, to: { type: 'string' } },
      });
      if (positionals.length !== 1 || !values.from || !values.to) throw usage('move-persistent POOL --from A --to B');
      const r = asView<PersistentDisksSwapped>(
        await api.post('/pools/{name}/move-persistent', {
          ...pool(positionals[0]!),
          body: { from: values.from, to: values.to },
        }),
      );
      return json
        ? printJson(r)
        : void process.stdout.write(`${r.from}'s persistent disk is now ${r.to}'s, and ${r.to}'s is ${r.from}'s\n`);
    }
    case 'assign': {
      if (args.length !== 3) throw usage('assign POOL DESKTOP USER');
      const r = asView<DesktopAssigned>(
        await api.post('/pools/{name}/assign', { ...pool(args[0]!), body: { desktop: args[1]!, user: args[2]! } }),
      );
      return json
        ? printJson(r)
        : void process.stdout.write(
            `${r.desktop} is ${r.user}'s${r.sparesStarted.length > 0 ? `; spare desktops powering on: ${r.sparesStarted.join(', ')}` : ''}\n`,
          );
    }
    case 'unassign': {
      if (args.length !== 2) throw usage('unassign POOL DESKTOP');
      const r = asView<DesktopFreed>(
        await api.post('/pools/{name}/unassign', { ...pool(args[0]!), body: { desktop: args[1]! } }),
      );
      return json
        ? printJson(r)
        : void process.stdout.write(
            `${r.desktop} is free${r.sparesStopped.length > 0 ? `; spares above the target powered off: ${r.sparesStopped.join(', ')}` : ''}\n`,
          );
    }
    case 'session-start': {
      if (args.length !== 3) throw usage('session-start POOL DESKTOP USER');
      const r = asView<DesktopSessionStarted>(
        await api.post('/pools/{name}/session-start', {
          ...pool(args[0]!),
          body: { desktop: args[1]!, user: args[2]! },
        }),
      );
      return json
        ? printJson(r)
        : void process.stdout.write(
            `${r.user} has a session on ${r.desktop}${r.sparesStarted.length > 0 ? `; spare desktops powering on: ${r.sparesStarted.join(', ')}` : ''}\n`,
          );
    }
    case 'session-end': {
      if (args.length !== 2) throw usage('session-end POOL DESKTOP');
      const r = asView<DesktopFreed>(
        await api.post('/pools/{name}/session-end', { ...pool(args[0]!), body: { desktop: args[1]! } }),
      );
      return json
        ? printJson(r)
        : void process.stdout.write(
            `the session on ${r.desktop} ended${r.sparesStopped.length > 0 ? `; spares above the target powered off: ${r.sparesStopped.join(', ')}` : ''}\n`,
          );
    }
    case 'resume': {
      if (args.length !== 1) throw usage('resume POOL');
      return follow(await api.post('/pools/{name}/resume', pool(args[0]!)), `resuming pool ${args[0]}`);
    }
    case 'delete': {
      if (args.length !== 1) throw usage('delete POOL');
      return follow(await api.delete('/pools/{name}', pool(args[0]!)), `deleting pool ${args[0]}`);
    }
    default:
      throw usage('<command>');
  }
}
