import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printFields, printJson, printTable } from './output.js';
import type { ResponseOf } from './api-types.js';

export const ALERTS_USAGE = `mamori alerts <command>         open incidents and the webhook their transitions are posted to
  list                                open incidents, the webhook and how its deliveries went
  webhook set URL                     post {status: firing|resolved, incident, site} to this http(s) URL
  webhook clear                       stop posting (notifications still owed are dropped)
  webhook test                        post a test alert now and wait for the answer`;

type AlertsView = ResponseOf<'/alerts', 'get'>;

export async function alertsCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori alerts ${what}\n${ALERTS_USAGE}`);
  const [sub, ...args] = rest;
  if (sub === 'list') {
    if (args.length !== 0) throw usage('list');
    return showAlerts(await api.get('/alerts'), json);
  }
  if (sub !== 'webhook') throw usage('<command>');
  const [action, ...more] = args;
  switch (action) {
    case 'set': {
      if (more.length !== 1) throw usage('webhook set URL');
      const config = await api.put('/alerts/webhook', { body: { url: more[0]! } });
      return json
        ? printJson(config)
        : void process.stdout.write(
            `alerts are posted to ${config?.url ?? more[0]}; 'mamori alerts webhook test' sends one now\n`,
          );
    }
    case 'clear': {
      if (more.length !== 0) throw usage('webhook clear');
      const r = await api.delete('/alerts/webhook');
      return json
        ? printJson(r)
        : void process.stdout.write(r.removed ? 'alert webhook removed\n' : 'no alert webhook was set\n');
    }
    case 'test': {
      if (more.length !== 0) throw usage('webhook test');
      const r = await api.post('/alerts/webhook/test');
      return json ? printJson(r) : void process.stdout.write(`test alert delivered to ${r.url}\n`);
    }
    default:
      throw usage('webhook set URL | webhook clear | webhook test');
  }
}

function showAlerts(v: AlertsView, json: boolean): void {
  if (json) return printJson(v);
  const d = v.deliveries;
  printFields({
    webhook: v.webhook
      ? `${v.webhook.url} (since ${v.webhook.configuredAt})`
      : "none ('mamori alerts webhook set URL')",
    deliveries: `${d.delivered} delivered, ${d.pending} pending, ${d.failed} refused${d.lastDeliveredAt ? `; last at ${d.lastDeliveredAt}` : ''}`,
    ...(d.lastError ? { 'last error': d.lastError } : {}),
  });
  process.stdout.write('\n');
  if (v.open.length === 0) return void process.stdout.write('no open incidents\n');
  printTable(
    v.open.map((i) => ({ ...i })),
    ['openedAt', 'severity', 'kind', 'target', 'message'],
  );
}
