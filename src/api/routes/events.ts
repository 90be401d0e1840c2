import type { FastifyPluginAsync } from 'fastify';
import type { IncidentLog } from '../../events/incident-log.js';
import { errorResponses } from '../schemas.js';

export const incidentSchema = {
  type: 'object',
  required: ['id', 'kind', 'severity', 'target', 'message', 'openedAt', 'clearedAt', 'remedy'],
  properties: {
    id: { type: 'string' },
    kind: { type: 'string' },
    severity: { type: 'string', enum: ['info', 'warning', 'critical'] },
    target: { type: 'string' },
    message: { type: 'string' },
    details: { type: ['object', 'null'], additionalProperties: true },
    openedAt: { type: 'string' },
    clearedAt: { type: ['string', 'null'] },
    remedy: { type: ['string', 'null'], description: 'what to do about it, naming the mamori commands that do it' },
  },
} as const;

/** Incidents (a violated RPO, ...): each opened once and cleared when it ends. */
export function eventRoutes(deps: { incidents: IncidentLog }): FastifyPluginAsync {
  return async (app) => {
    app.get<{ Querystring: { open?: string; target?: string; limit?: string } }>(
      '/events',
      {
        schema: {
          summary: 'Incidents, newest first; open=true for those still open',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              open: { type: 'string', enum: ['true', 'false'] },
              target: { type: 'string', minLength: 1 },
              limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
            },
          },
          response: { 200: { type: 'array', items: incidentSchema }, ...errorResponses },
        },
      },
      async (req) =>
        deps.incidents.list({
          open: req.query.open === 'true',
          ...(req.query.target ? { target: req.query.target } : {}),
          ...(req.query.limit ? { limit: Number(req.query.limit) } : {}),
        }),
    );
  };
}
