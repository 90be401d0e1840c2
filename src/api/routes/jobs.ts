import type { FastifyPluginAsync } from 'fastify';
import { JOB_STATES, type JobJournal, type JobState } from '../../jobs/job-journal.js';
import { errorResponses } from '../schemas.js';

export function jobRoutes(deps: { jobs: JobJournal }): FastifyPluginAsync {
  return async (app) => {
    app.get<{ Querystring: { kind?: string; target?: string; state?: JobState; limit?: string } }>(
      '/jobs',
      {
        schema: {
          summary: 'Recent jobs, newest first',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              kind: { type: 'string', minLength: 1 },
              target: { type: 'string', minLength: 1 },
              state: { type: 'string', enum: [...JOB_STATES] },
              limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
            },
          },
          response: { 200: { type: 'array', items: { $ref: 'Job#' } }, ...errorResponses },
        },
      },
      async (req) =>
        deps.jobs.list({
          ...(req.query.kind ? { kind: req.query.kind } : {}),
          ...(req.query.target ? { target: req.query.target } : {}),
          ...(req.query.state ? { state: req.query.state } : {}),
          ...(req.query.limit ? { limit: Number(req.query.limit) } : {}),
        }),
    );
    app.get(
      '/job-kinds',
      {
        schema: {
          summary: 'The kinds of job this site runs: steps, recovery policy (rollback or resume), context version',
          response: {
            200: {
              type: 'array',
              items: {
                type: 'object',
                required: ['kind', 'policy', 'steps', 'contextVersion', 'summary'],
                properties: {
                  kind: { type: 'string' },
                  policy: { type: 'string', enum: ['rollback', 'resume'] },
                  steps: { type: ['array', 'null'], items: { type: 'string' } },
                  contextVersion: { type: 'integer' },
                  summary: { type: 'string' },
                },
              },
            },
            ...errorResponses,
          },
        },
      },
      async () => deps.jobs.kinds(),
    );
    app.get<{ Params: { id: string } }>(
      '/jobs/:id',
      {
        schema: {
          summary: 'One job with its journal of steps',
          params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
          response: { 200: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req) => deps.jobs.get(req.params.id),
    );
  };
}
