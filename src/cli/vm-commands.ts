import { parseArgs } from 'node:util';
import type { ApiClient } from './api-client.js';
import { formatBytes, printFields, printJson, printTable } from './output.js';
import type { RequestBody } from './api-types.js';
import { MamoriError } from '../core/mamori-error.js';
import { parseSize } from '../core/names.js';
import { asView, dataLossText, storedDataLoss, type MigrationResult, type RunSummary } from './server-views.js';

export const VM_USAGE = `mamori vm <command>
  create NAME [--test-guest] [--data-disk SIZE] [--writelog-rate N | --no-writelog] [--writelog-payload random|text] [--no-acpi] [--guest-agent]
              [--vcpus N] [--memory SIZE] [--firmware bios|uefi] [--machine TYPE]
              [--disk DISK]... [--disk-bus virtio|sata] [--stop-timeout SEC] [--network NET]...
  list | show NAME | start NAME [--force] | stop NAME [--timeout SEC] [--force]
  kill NAME | pause NAME | resume NAME [--force] | delete NAME [--force] | console NAME [--lines N]
  (--force on start/resume: run a VM that a failover at the peer superseded)
  snapshot NAME SNAPSHOT | snapshot list NAME | snapshot delete NAME SNAPSHOT (running or stopped)
  migrate NAME --to SITE [--downtime-limit MS] [--bandwidth MBPS] [--link-timeout SEC] [--no-wait]
  migrate-cancel NAME
  failover NAME --planned [--point TIME] [--no-reverse] [--no-wait]

  migrate or failover?
    migrate   moves a running VM live: both sites up, the guest keeps running (downtime is
              the switchover, milliseconds). Onto the site holding its replica, only what
              changed since the newest point crosses, and replication then runs back.
    failover  --planned: the site holding the VM's replica takes over with nothing lost: the
              guest is shut down here, a last replication cycle sends its final writes, the
              replica becomes the VM there and boots (downtime: a shutdown and a boot), and
              replication is reversed (--no-reverse: not). Use it when this site is going
              away (maintenance, power, a move) or the VM must not run across the switch.
              It is a one-VM recovery plan run at the other site, in its plan history.
    When this site is already gone, fail over from the recovery site with a plan:
    mamori plan run PLAN --mode disaster.`;

export async function vmCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          'test-guest': { type: 'boolean' },
          'data-disk': { type: 'string' },
          'writelog-rate': { type: 'string' },
          'writelog-payload': { type: 'string' },
          'no-writelog': { type: 'boolean' },
          'no-acpi': { type: 'boolean' },
          'guest-agent': { type: 'boolean' },
          vcpus: { type: 'string' },
          memory: { type: 'string' },
          firmware: { type: 'string' },
          machine: { type: 'string' },
          disk: { type: 'string', multiple: true },
          'stop-timeout': { type: 'string' },
          network: { type: 'string', multiple: true },
          'disk-bus': { type: 'string' },
        },
      });
      const name = one(positionals, 'vm create NAME');
      const body: RequestBody<'/vms', 'post'> = { name };
      if (values['test-guest']) body['testGuest'] = true;
      if (values['data-disk']) body['dataDisk'] = values['data-disk'];
      if (values['writelog-rate'] !== undefined) body['writelogRate'] = int(values['writelog-rate'], '--writelog-rate');
      if (values['no-acpi']) body['acpi'] = false;
      if (values['no-writelog']) body['writelog'] = false;
      if (values['writelog-payload'] !== undefined)
        body['writelogPayload'] = writelogPayload(values['writelog-payload']);
      if (values['guest-agent']) body['guestAgent'] = true;
      if (values.vcpus !== undefined) body['vcpus'] = int(values.vcpus, '--vcpus');
      if (values.memory !== undefined) body['memoryMiB'] = memoryMiB(values.memory);
      if (values.firmware) body['firmware'] = values.firmware;
      if (values.machine) body['machineType'] = values.machine;
      if (values.disk) body['disks'] = values.disk;
      if (values['disk-bus']) body['diskBus'] = values['disk-bus'];
      // One NIC per --network, in order: 'user', 'none' or a site network (mamori network list).
      if (values.network) body['nics'] = values.network.map((network) => ({ network }));
      if (values['stop-timeout'] !== undefined) body['stopTimeoutSec'] = int(values['stop-timeout'], '--stop-timeout');
      const vm = await api.post('/vms', { body });
      return json
        ? printJson(vm)
        : void process.stdout.write(
            `created VM ${vm.name} (${vm.machineType}, ${vm.firmware}, ${vm.vcpus} vCPU, ${vm.memoryMiB} MiB)\n`,
          );
    }
    case 'list': {
      const vms = await api.get('/vms');
      if (json) return printJson(vms);
      return printTable(
        vms.map((v) => ({ ...v, heartbeat: v.lastHeartbeatAt })),
        ['name', 'state', 'vcpus', 'memoryMiB', 'machineType', 'heartbeat'],
      );
    }
    case 'show': {
      const vm = await api.get('/vms/{name}', { path: { name: one(rest, 'vm show NAME') } });
      if (json) return printJson(vm);
      return printFields({
        name: vm.name,
        state: vm.state,
        reason: vm.stateReason,
        pid: vm.pid,
        vcpus: vm.vcpus,
        memory: `${vm.memoryMiB} MiB`,
        firmware: vm.firmware,
        machine: vm.machineType,
        heartbeat: vm.lastHeartbeatAt,
        'last line': vm.lastHeartbeat,
        disks:
          vm.disks.map((d) => `${d.name} (${d.kind}${d.rdmMode ? `/${d.rdmMode}` : ''}, ${d.format})`).join(', ') ||
          '-',
      });
    }
    case 'start':
    case 'resume': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { force: { type: 'boolean' } },
      });
      const vm = await api.post(`/vms/{name}/${sub}`, {
        path: { name: one(positionals, `vm ${sub} NAME [--force]`) },
        body: values.force ? { force: true } : {},
      });
      return json ? printJson(vm) : void process.stdout.write(`VM ${vm.name} is ${vm.state}\n`);
    }
    case 'kill':
    case 'pause': {
      const vm = await api.post(`/vms/{name}/${sub}`, { path: { name: one(rest, `vm ${sub} NAME`) } });
      return json ? printJson(vm) : void process.stdout.write(`VM ${vm.name} is ${vm.state}\n`);
    }
    case 'stop': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { timeout: { type: 'string' }, force: { type: 'boolean' } },
      });
      const body: RequestBody<'/vms/{name}/stop', 'post'> = {};
      if (values.timeout !== undefined) body['timeoutSec'] = int(values.timeout, '--timeout');
      if (values.force) body['force'] = true;
      const name = one(positionals, 'vm stop NAME');
      const out = await api.post('/vms/{name}/stop', { path: { name }, body });
      return json
        ? printJson(out)
        : void process.stdout.write(
            `VM ${out.vm?.name ?? name} is ${out.vm?.state ?? '?'}${out.forced ? ' (forced off: the guest did not shut down in time)' : ' (guest shut down)'}\n`,
          );
    }
    case 'delete': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { force: { type: 'boolean' } },
      });
      const name = one(positionals, 'vm delete NAME');
      await api.delete('/vms/{name}', { path: { name }, query: values.force ? { force: 'true' } : {} });
      return json ? printJson({ deleted: name }) : void process.stdout.write(`deleted VM ${name}\n`);
    }
    case 'snapshot': {
      if (rest[0] === 'list') {
        const snaps = await api.get('/vms/{name}/snapshots', {
          path: { name: one(rest.slice(1), 'vm snapshot list NAME') },
        });
        return json ? printJson(snaps) : printTable(snaps, ['name', 'createdAt', 'running']);
      }
      if (rest[0] === 'delete') {
        if (rest.length !== 3) throw new MamoriError('INVALID_INPUT', 'usage: mamori vm snapshot delete NAME SNAPSHOT');
        await api.delete('/vms/{name}/snapshots/{snapshot}', { path: { name: rest[1]!, snapshot: rest[2]! } });
        return json
          ? printJson({ deleted: rest[2] })
          : void process.stdout.write(`snapshot ${rest[2]} of ${rest[1]} deleted\n`);
      }
      if (rest.length !== 2) throw new MamoriError('INVALID_INPUT', 'usage: mamori vm snapshot NAME SNAPSHOT');
      const snap = await api.post('/vms/{name}/snapshots', { path: { name: rest[0]! }, body: { name: rest[1]! } });
      return json
        ? printJson(snap)
        : void process.stdout.write(
            `snapshot ${snap.name} of ${rest[0]} taken${snap.running ? ' while running (crash-consistent)' : ''}\n`,
          );
    }
    case 'migrate': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          to: { type: 'string' },
          'downtime-limit': { type: 'string' },
          bandwidth: { type: 'string' },
          'link-timeout': { type: 'string' },
          'no-wait': { type: 'boolean' },
        },
      });
      const name = one(positionals, 'vm migrate NAME --to SITE');
      if (!values.to)
        throw new MamoriError(
          'INVALID_INPUT',
          'usage: mamori vm migrate NAME --to SITE [--downtime-limit MS] [--bandwidth MBPS]',
        );
      const body: RequestBody<'/vms/{name}/migrate', 'post'> = { to: values.to };
      if (values['downtime-limit'] !== undefined)
        body['downtimeLimitMs'] = int(values['downtime-limit'], '--downtime-limit');
      if (values.bandwidth !== undefined) body['bandwidthMbps'] = int(values.bandwidth, '--bandwidth');
      if (values['link-timeout'] !== undefined) body['linkTimeoutSec'] = int(values['link-timeout'], '--link-timeout');
      const job = await api.post('/vms/{name}/migrate', { path: { name }, body });
      if (values['no-wait'])
        return json ? printJson(job) : void process.stdout.write(`migration job ${job.id} started\n`);
      for (;;) {
        const j = await api.get('/jobs/{id}', { path: { id: job.id } });
        if (j.state !== 'running') {
          if (j.state === 'failed') process.exitCode = 1;
          if (json) return printJson(j);
          if (j.state === 'failed') {
            process.exitCode = 1;
            return void process.stdout.write(
              `migration failed: ${j.error?.message ?? ''}\nthe VM runs on at this site\n`,
            );
          }
          const r = asView<MigrationResult>(j.result);
          return void process.stdout.write(
            `${name} now runs at ${r.to}: downtime ${r.downtimeMs ?? '?'} ms, total ${(r.totalMs / 1000).toFixed(1)} s, ` +
              `RAM ${formatBytes(r.ramBytes)}, disks ${formatBytes(r.diskBytes)}\n`,
          );
        }
        if (!json) {
          const live = (
            j.context as {
              live?: {
                ramTransferred: number;
                ramRemaining: number;
                dirtyRateBps: number;
                expectedDowntimeMs: number | null;
                diskMirrored: number;
              };
            } | null
          )?.live;
          const step = j.steps.find((s) => s.state === 'running')?.name ?? 'starting';
          const detail = live
            ? ` RAM ${formatBytes(live.ramTransferred)} sent, ${formatBytes(live.ramRemaining)} left, dirtying ${formatBytes(live.dirtyRateBps)}/s,` +
              ` expected downtime ${live.expectedDowntimeMs ?? '?'} ms; disks ${formatBytes(live.diskMirrored)}`
            : '';
          process.stderr.write(`\r${step} ${Math.round(j.progress * 100)}%${detail}   `);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    case 'failover': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          planned: { type: 'boolean' },
          'no-reverse': { type: 'boolean' },
          'no-wait': { type: 'boolean' },
          point: { type: 'string' },
        },
      });
      const name = one(positionals, 'vm failover NAME --planned [--point TIME] [--no-reverse]');
      const job = await api.post('/vms/{name}/failover', {
        path: { name },
        body: {
          planned: values.planned === true,
          reverse: !values['no-reverse'],
          ...(values.point === undefined ? {} : { point: values.point }),
        },
      });
      if (values['no-wait'])
        return json ? printJson(job) : void process.stdout.write(`failover job ${job.id} started\n`);
      for (;;) {
        const j = await api.get('/jobs/{id}', { path: { id: job.id } });
        // The failover job's context, as src/site-roles/vm-failover.ts writes it.
        const c = asView<{ to?: string; failover?: RunSummary; reprotect?: RunSummary } | null>(j.context);
        if (j.state !== 'running') {
          if (json) {
            if (j.state === 'failed') process.exitCode = 1;
            return printJson(j);
          }
          if (j.state === 'failed') {
            process.exitCode = 1;
            return void process.stdout.write(`\nfailover failed: ${j.error?.message ?? ''}\n`);
          }
          const f = c?.failover;
          return void process.stdout.write(
            `\n${name} now runs at ${c?.to ?? '?'} (plan run ${f?.run ?? '?'}: heartbeat ${f?.rtoSec ?? '?'} s after the start, data loss ${dataLossText(f?.vms[0] ? storedDataLoss(f.vms[0]) : null)})` +
              `${c?.reprotect ? `; it replicates back here (run ${c.reprotect.run})` : ''}\n`,
          );
        }
        if (!json) {
          const s = c?.reprotect ?? c?.failover;
          const step = j.steps.find((x) => x.state === 'running')?.name ?? 'starting';
          process.stderr.write(
            `\r${step}${s ? `: run ${s.run} at ${c?.to}, ${s.steps.done}/${s.steps.total} steps` : ''}   `,
          );
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    case 'migrate-cancel': {
      const name = one(rest, 'vm migrate-cancel NAME');
      await api.post('/vms/{name}/migrate/cancel', { path: { name } });
      return json
        ? printJson({ cancelled: name })
        : void process.stdout.write(`migration of ${name} cancelled; it runs on here\n`);
    }
    case 'console': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { lines: { type: 'string' } },
      });
      const out = await api.get('/vms/{name}/console', {
        path: { name: one(positionals, 'vm console NAME') },
        query: { lines: String(int(values.lines ?? '20', '--lines')) },
      });
      return json ? printJson(out) : void process.stdout.write((out.lines ?? []).map((l) => `${l}\n`).join(''));
    }
    default:
      throw new MamoriError('INVALID_INPUT', `unknown vm command ${JSON.stringify(sub ?? '')}\n${VM_USAGE}`);
  }
}

export function one(positionals: string[], usage: string): string {
  if (positionals.length !== 1 || !positionals[0]) throw new MamoriError('INVALID_INPUT', `usage: mamori ${usage}`);
  return positionals[0];
}

export function int(text: string, flag: string): number {
  if (!/^-?\d+$/.test(text))
    throw new MamoriError('INVALID_INPUT', `${flag} needs a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** --writelog-payload: checked here so the flag is named in the error (the server checks too). */
function writelogPayload(text: string): 'random' | 'text' {
  if (text === 'random' || text === 'text') return text;
  throw new MamoriError('INVALID_INPUT', `--writelog-payload takes random or text, got ${JSON.stringify(text)}`);
}

/** --memory takes MiB as a plain number, or a size with a unit (512M, 2G). */
function memoryMiB(text: string): number {
  if (/^\d+$/.test(text)) return Number(text);
  return Math.floor(parseSize(text) / (1024 * 1024));
}
