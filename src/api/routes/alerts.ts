import type { FastifyPluginAsync } from 'fastify';
import type { AlertNotifier } from '../../events/alert-notifier.js';
import type { IncidentLog } from '../../events/incident-log.js';
import { errorResponses } from '../schemas.js';
import { incidentSchema } from './events.js';

const nullableString = { type: ['string', 'null'] } as const;

const webhookSchema = {
  type: ['object', 'null'],
  required: ['url', 'configuredAt'],
  properties: { url: { type: 'string' }, configuredAt: { type: 'string' } },
} as const;

const deliverySchema = {
  type: 'object',
  required: ['incidentId', 'kind', 'target', 'status', 'state', 'attempts'],
  properties: {
    incidentId: { type: 'string' },
    kind: { type: 'string' },
    target: { type: 'string' },
    status: { type: 'string', enum: ['firing', 'resolved'] },
    state: { type: 'string', enum: ['pending', 'delivered', 'failed', 'skipped'] },
    attempts: { type: 'integer' },
    lastError: nullableString,
    nextAttemptAt: nullableString,
    deliveredAt: nullableString,
  },
} as const;

const alertsSchema = {
  type: 'object',
  required: ['open', 'webhook', 'deliveries'],
  properties: {
    open: { type: 'array', items: incidentSchema },
    webhook: webhookSchema,
    deliveries: {
      type: 'object',
      required: ['pending', 'delivered', 'failed', 'recent'],
      properties: {
        pending: { type: 'integer' },
        delivered: { type: 'integer' },
        failed: { type: 'integer' },
        lastDeliveredAt: nullableString,
        lastError: nullableString,
        recent: { type: 'array', items: deliverySchema },
      },
    },
  },
} as const;

/** Alerts: open incidents, and the webhook their transitions are posted to. */
export function alertRoutes(deps: { incidents: IncidentLog; alerts: AlertNotifier }): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/alerts',
      {
        schema: {
          summary: 'Open incidents, the alert webhook and how its deliveries went',
          response: { 200: alertsSchema, ...errorResponses },
        },
      },
      async () => ({
        open: await deps.incidents.list({ open: true, limit: 1000 }),
        webhook: await deps.alerts.webhook(),
        deliveries: await deps.alerts.deliveries(),
      }),
    );
    app.put<{ Body: { url: string } }>(
      '/alerts/webhook',
      {
        schema: {
          summary: 'Set the webhook each incident transition (firing, resolved) is posted to',
          // The URL is checked by the notifier (ALERT_WEBHOOK_INVALID names what is wrong).
          body: {
            type: 'object',
            required: ['url'],
            additionalProperties: false,
            properties: { url: { type: 'string' } },
          },
          response: { 200: webhookSchema, ...errorResponses },
        },
      },
      async (req) => deps.alerts.setWebhook(req.body.url),
    );
    app.delete(
      '/alerts/webhook',
      {
        schema: {
          summary: 'Remove the alert webhook (notifications it still owed are dropped)',
          response: {
            200: { type: 'object', required: ['removed'], properties: { removed: { type: 'boolean' } } },
            ...errorResponses,
          },
        },
      },
      async () => ({ removed: await deps.alerts.clearWebhook() }),
    );
    app.post(
      '/alerts/webhook/test',
      {
        schema: {
          summary: 'Post a test alert to the webhook now and wait for its answer',
          response: {
            200: {
              type: 'object',
              required: ['url', 'delivered'],
              properties: { url: { type: 'string' }, delivered: { type: 'boolean' } },
            },
            ...errorResponses,
          },
        },
      },
      async () => deps.alerts.test(),
    );
  };
}
