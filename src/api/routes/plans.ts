import type { FastifyPluginAsync } from 'fastify';
import type { PlanService } from '../../plans/plan-service.js';
import type { PlanRunner } from '../../plans/plan-runner.js';
import type { RunJournal, RunMode } from '../../plans/run-journal.js';
import { renderRunHtml, summarizeRun } from '../../plans/plan-report.js';
import { MamoriError } from '../../core/mamori-error.js';
import { PLAN_BODY_LIMIT } from '../../plans/plan-limits.js';
import { errorResponses, nameParam } from '../schemas.js';
import { callerOf } from '../request-caller.js';
import { peerFailoverRun, startPeerFailover, type VmFailover } from '../../site-roles/vm-failover.js';

// Plans and runs carry nested documents (specs, journals, per-VM figures): passed through whole.
const free = { type: 'object', additionalProperties: true } as const;
const runParam = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^run-[a-z0-9]{1,40}$' } },
} as const;

/** Recovery plans (kept at the recovery site) and their runs, journals and reports. */
export function planRoutes(deps: {
  plans: PlanService;
  runner: PlanRunner;
  runs: RunJournal;
  failover: VmFailover;
}): FastifyPluginAsync {
  const peerName = (req: Parameters<typeof callerOf>[0]): string => callerOf(req).name.replace(/^site:/, '');
  return async (app) => {
    app.post<{ Params: { name: string }; Body: { planned: boolean; reverse?: boolean; point?: string } }>(
      '/vms/:name/failover',
      {
        schema: {
          summary:
            'Planned failover of one VM to the site holding its replica (a one-VM recovery plan run there in planned mode, then reprotect); returns the job',
          params: nameParam,
          body: {
            type: 'object',
            required: ['planned'],
            additionalProperties: false,
            properties: {
              planned: { type: 'boolean' },
              reverse: { type: 'boolean' },
              point: {
                type: 'string',
                maxLength: 64,
                description:
                  'recover at this time (ISO 8601) rather than the final sync: the newest point at or before it, a continuous replica at its checkpoint; what the VM wrote after it is given up',
              },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(202).send(await deps.failover.start(req.params.name, req.body)),
    );
    app.post<{ Body: { vm: string; mode: 'planned' | 'reprotect'; pointTime?: string } }>(
      '/recovery/vm-failover',
      {
        schema: {
          summary:
            "Recovery site: apply the one-VM plan for the caller's VM and run it (planned, or reprotect after it)",
          body: {
            type: 'object',
            required: ['vm', 'mode'],
            additionalProperties: false,
            properties: {
              vm: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
              mode: { type: 'string', enum: ['planned', 'reprotect'] },
              pointTime: { type: 'string', maxLength: 64 },
            },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => startPeerFailover(deps, peerName(req), req.body),
    );
    app.get<{ Params: { id: string } }>(
      '/recovery/vm-failover/:id',
      {
        schema: {
          summary: 'Recovery site: a one-VM failover run of the caller, as a summary',
          params: runParam,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => peerFailoverRun(deps, peerName(req), req.params.id),
    );
    app.get(
      '/plans',
      {
        schema: {
          summary: 'Recovery plans of this site',
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async () => deps.plans.list(),
    );
    app.post<{ Body: { yaml?: string; spec?: unknown } }>(
      '/plans',
      {
        // Refused (413 BODY_TOO_LARGE) before it is read whole or parsed; the text's own limit
        // (PLAN_LIMITS.bytes, PLAN_TOO_LARGE) is checked exactly by the parser.
        bodyLimit: PLAN_BODY_LIMIT,
        schema: {
          summary: 'Create or replace a plan, from YAML text or a JSON spec; checked against both sites first',
          body: { type: 'object', additionalProperties: false, properties: { yaml: { type: 'string' }, spec: free } },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => {
        const { yaml, spec } = req.body;
        if ((yaml === undefined) === (spec === undefined))
          throw new MamoriError('INVALID_INPUT', 'send exactly one of yaml (the plan as YAML text) or spec (as JSON)');
        return deps.plans.apply(yaml !== undefined ? { yaml } : { spec }, {
          mayRunCommands: callerOf(req).role === 'admin',
        });
      },
    );
    app.get<{ Params: { name: string } }>(
      '/plans/:name',
      { schema: { summary: 'One plan', params: nameParam, response: { 200: free, ...errorResponses } } },
      async (req) => deps.plans.get(req.params.name),
    );
    app.delete<{ Params: { name: string } }>(
      '/plans/:name',
      {
        schema: {
          summary: 'Delete a plan (its run history stays)',
          params: nameParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await deps.plans.delete(req.params.name);
        return reply.code(204).send();
      },
    );
    app.post<{ Params: { name: string }; Body: { mode: RunMode; pointTime?: string; dryRun?: boolean } }>(
      '/plans/:name/runs',
      {
        schema: {
          summary: 'Run a plan (test, cleanup, planned, disaster), or with dryRun show the steps it would take',
          params: nameParam,
          body: {
            type: 'object',
            required: ['mode'],
            additionalProperties: false,
            properties: { mode: { type: 'string' }, pointTime: { type: 'string' }, dryRun: { type: 'boolean' } },
          },
          response: { 200: free, 202: free, ...errorResponses },
        },
      },
      async (req, reply) => {
        const { mode, pointTime, dryRun } = req.body;
        if (dryRun) return deps.runner.dryRun(req.params.name, mode);
        return reply
          .code(202)
          .send(await deps.runner.start(req.params.name, mode, pointTime !== undefined ? { pointTime } : {}));
      },
    );
    app.get<{ Querystring: { plan?: string } }>(
      '/plan-runs',
      {
        schema: {
          summary: 'Plan runs, newest first, as summaries',
          querystring: { type: 'object', additionalProperties: false, properties: { plan: { type: 'string' } } },
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async (req) =>
        (await deps.runs.list(req.query.plan !== undefined ? { plan: req.query.plan } : {})).map(summarizeRun),
    );
    app.get<{ Params: { id: string }; Querystring: { format?: 'json' | 'html' } }>(
      '/plan-runs/:id',
      {
        schema: {
          summary: 'A run with its journal (format=html: the report as a page)',
          params: runParam,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { format: { type: 'string', enum: ['json', 'html'] } },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req, reply) => {
        const run = await deps.runner.get(req.params.id);
        if (req.query.format === 'html')
          return reply
            .type('text/html; charset=utf-8')
            .serializer((x: unknown) => String(x))
            .send(renderRunHtml(run));
        return { ...run, summary: summarizeRun(run) };
      },
    );
    for (const action of ['resume', 'continue', 'cancel'] as const) {
      app.post<{ Params: { id: string } }>(
        `/plan-runs/:id/${action}`,
        {
          schema: { summary: `${action} a run`, params: runParam, response: { 200: free, ...errorResponses } },
        },
        async (req) => deps.runner[action](req.params.id),
      );
    }
  };
}
