import type { FastifyPluginAsync } from 'fastify';
import type { SiteMetrics } from '../../metrics/site-metrics.js';
import { errorResponses } from '../schemas.js';

/** Prometheus scrapes this with a viewer token (`authorization: { credentials_file: ... }` in its job). */
export function metricsRoutes(deps: { metrics: SiteMetrics }): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/metrics',
      {
        schema: {
          summary: 'Prometheus metrics of the site (text exposition format 0.0.4)',
          produces: ['text/plain'],
          response: { 200: { type: 'string', description: 'Prometheus text exposition format' }, ...errorResponses },
        },
      },
      async (_req, reply) => reply.type(deps.metrics.contentType).send(await deps.metrics.text()),
    );
  };
}
