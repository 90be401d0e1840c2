import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printFields, printJson, printTable } from './output.js';
import {
  asView,
  renderRunHtml,
  summaryText,
  type DryRun,
  type PlanRun,
  type PlanView,
  type RunSummary,
} from './server-views.js';

export const PLAN_USAGE = `mamori plan <command>           recovery plans (run at the recovery site)
  apply FILE.yaml                      create or replace a plan; checked against both sites first
  list | show PLAN | delete PLAN
  run PLAN --mode test|cleanup|planned|disaster [--point TIME] [--dry-run] [--no-wait]
                                       test: into the isolated test network, replication goes on
                                       cleanup: remove what tests made; planned: shut down, sync, recover
                                       with zero loss; disaster: recover from the newest point held here
  resume RUN | continue RUN | cancel RUN
                                       resume: a run its server died in; continue: past a prompt
  history [PLAN] | report RUN [--json] [--html FILE]`;

export async function planCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori plan ${what}\n${PLAN_USAGE}`);
  const plan = (name: string): { path: { name: string } } => ({ path: { name } });
  switch (sub) {
    case 'apply': {
      if (args.length !== 1) throw usage('apply FILE.yaml');
      const yaml = await readFile(args[0]!, 'utf8').catch((e: unknown) => {
        throw new MamoriError('INVALID_INPUT', `cannot read ${args[0]}: ${(e as Error).message}`);
      });
      const p = asView<PlanView>(await api.post('/plans', { body: { yaml } }));
      return json ? printJson(p) : showPlan(p);
    }
    case 'list': {
      const all = asView<PlanView[]>(await api.get('/plans'));
      if (json) return printJson(all);
      if (all.length === 0)
        return void process.stdout.write("no recovery plans; 'mamori plan apply plan.yaml' makes one\n");
      return printTable(
        all.map((p) => ({ name: p.name, 'protected site': p.protectedSite, groups: scope(p.spec), vms: p.vms.length })),
        ['name', 'protected site', 'groups', 'vms'],
      );
    }
    case 'show': {
      if (args.length !== 1) throw usage('show PLAN');
      const p = asView<PlanView>(await api.get('/plans/{name}', plan(args[0]!)));
      return json ? printJson(p) : showPlan(p);
    }
    case 'delete':
      if (args.length !== 1) throw usage('delete PLAN');
      await api.delete('/plans/{name}', plan(args[0]!));
      return json ? printJson({ deleted: args[0] }) : void process.stdout.write(`plan ${args[0]} deleted\n`);
    case 'run': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: {
          mode: { type: 'string' },
          point: { type: 'string' },
          'dry-run': { type: 'boolean' },
          'no-wait': { type: 'boolean' },
        },
      });
      if (positionals.length !== 1 || !values.mode)
        throw usage('run PLAN --mode MODE [--point TIME] [--dry-run] [--no-wait]');
      const body = {
        mode: values.mode,
        ...(values.point ? { pointTime: values.point } : {}),
        ...(values['dry-run'] ? { dryRun: true } : {}),
      };
      if (values['dry-run']) {
        const d = asView<DryRun>(await api.post('/plans/{name}/runs', { ...plan(positionals[0]!), body }));
        if (json) return printJson(d);
        process.stdout.write(
          `dry run of ${d.mode} for plan ${d.plan}: ${d.steps.length} steps, nothing changed${d.inventoryFresh ? '' : ' (protected site unreachable: its last inventory was used)'}\n`,
        );
        d.steps.forEach((s, i) => process.stdout.write(`  ${String(i + 1).padStart(3)}. ${s.label}\n`));
        process.stdout.write(
          `predicted RTO: ${d.predictedRtoSec === null ? 'unknown (no earlier run of this mode)' : `${d.predictedRtoSec} s (earlier runs)`}\n`,
        );
        return;
      }
      const run = asView<PlanRun>(await api.post('/plans/{name}/runs', { ...plan(positionals[0]!), body }));
      if (values['no-wait'])
        return json
          ? printJson(run)
          : void process.stdout.write(`run ${run.id} started; follow it with 'mamori plan report ${run.id}'\n`);
      return follow(api, run.id, json);
    }
    case 'resume':
    case 'continue':
    case 'cancel': {
      if (args.length !== 1) throw usage(`${sub} RUN`);
      const run = asView<PlanRun>(await api.post(`/plan-runs/{id}/${sub}`, { path: { id: args[0]! } }));
      if (sub === 'cancel')
        return json
          ? printJson(run)
          : void process.stdout.write(`run ${run.id}: cancel asked; steps in flight finish\n`);
      return follow(api, run.id, json);
    }
    case 'history': {
      if (args.length > 1) throw usage('history [PLAN]');
      const runs = asView<RunSummary[]>(await api.get('/plan-runs', { query: args[0] ? { plan: args[0] } : {} }));
      if (json) return printJson(runs);
      return printTable(
        runs.map((r) => ({
          run: r.run,
          plan: r.plan,
          mode: r.mode,
          result: r.result ?? r.state,
          started: r.startedAt,
          'RTO s': r.rtoSec ?? '-',
          'took s': r.durationSec ?? '-',
        })),
        ['run', 'plan', 'mode', 'result', 'started', 'RTO s', 'took s'],
      );
    }
    case 'report': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { html: { type: 'string' } },
      });
      if (positionals.length !== 1) throw usage('report RUN [--json] [--html FILE]');
      const run = asView<PlanRun & { summary: RunSummary }>(
        await api.get('/plan-runs/{id}', { path: { id: positionals[0]! } }),
      );
      if (values.html) {
        await writeFile(values.html, renderRunHtml(run));
        if (!json) process.stdout.write(`report written to ${values.html}\n`);
      }
      if (json) return printJson(run);
      process.stdout.write(summaryText(run));
      for (const s of run.steps)
        process.stdout.write(`  [${s.state}] ${s.label}${s.message ? `: ${s.message}` : ''}\n`);
      return;
    }
    default:
      throw usage('<command>');
  }
}

function showPlan(p: PlanView): void {
  printFields({
    name: p.name,
    'protected site': p.protectedSite,
    groups: scope(p.spec),
    'inventory seen': p.inventoryTakenAt,
    steps: p.spec.steps.length,
  });
  printTable(
    p.vms.map((v) => ({
      priority: v.priority,
      vm: v.name,
      group: v.group ?? '-',
      'power on': v.powerOn ? 'yes' : 'no',
      'depends on': v.dependsOn.join(', ') || '-',
    })),
    ['priority', 'vm', 'group', 'power on', 'depends on'],
  );
}

/** Waits for the run to end (or to wait at a prompt), printing each step as it settles. */
async function follow(api: ApiClient, id: string, json: boolean): Promise<void> {
  const printed = new Set<string>();
  for (;;) {
    const run = asView<PlanRun>(await api.get('/plan-runs/{id}', { path: { id } }));
    if (!json) {
      for (const s of run.steps) {
        if ((s.state === 'done' || s.state === 'failed' || s.state === 'skipped') && !printed.has(s.id)) {
          printed.add(s.id);
          process.stdout.write(`  [${s.state}] ${s.label}${s.message ? `: ${s.message}` : ''}\n`);
        }
      }
    }
    if (run.state === 'waiting') {
      if (json) return printJson(run);
      return void process.stdout.write(
        `run ${run.id} is waiting: ${run.prompt ?? ''}\ncontinue it with 'mamori plan continue ${run.id}'\n`,
      );
    }
    if (run.state !== 'running') {
      if (json) return printJson(run);
      process.stdout.write(summaryText(run));
      if (run.result === 'errors' || run.result === 'cancelled') process.exitCode = 1;
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** What a plan recovers: its groups, and the VMs it names one by one. */
function scope(spec: { protectionGroups: string[]; protectedVms?: string[] }): string {
  return [...spec.protectionGroups, ...(spec.protectedVms ?? []).map((v) => `vm ${v}`)].join(', ');
}
