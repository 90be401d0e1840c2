import type { FastifyPluginAsync } from 'fastify';
import type { JobJournal } from '../../jobs/job-journal.js';
import { errorResponses } from '../schemas.js';

export function jobRoutes(deps: { jobs: JobJournal }): FastifyPluginAsync {
  return async (app) => {
    app.get('/jobs', { schema: { summary: 'Recent jobs', response: { 200: { type: 'array', items: { $ref: 'Job#' } }, ...errorResponses } } }, async () => deps.jobs.list());
    app.get<{ Params: { id: string } }>('/jobs/:id', {
      schema: { summary: 'One job with its journal of steps', params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } }, response: { 200: { $ref: 'Job#' }, ...errorResponses } },
    }, async (req) => deps.jobs.get(req.params.id));
  };
}
