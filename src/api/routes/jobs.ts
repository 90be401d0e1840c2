import type { FastifyPluginAsync } from 'fastify';
import type { JobJournal } from '../../jobs/job-journal.js';
import { errorResponses } from '../schemas.js';

export function jobRoutes(deps: { jobs: JobJournal }): FastifyPluginAsync {
  return async (app) => {
    app.get<{ Querystring: { kind?: string; target?: string; limit?: string } }>(
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
          ...(req.query.limit ? { limit: Number(req.query.limit) } : {}),
        }),
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
