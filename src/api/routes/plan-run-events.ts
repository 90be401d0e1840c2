import type { FastifyPluginAsync } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { PlanRunner } from '../../plans/plan-runner.js';
import type { PlanRun, RunJournal } from '../../plans/run-journal.js';
import { summarizeRun } from '../../plans/plan-report.js';
import { errorResponses } from '../schemas.js';

const runParam = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^run-[a-z0-9]{1,40}$' } },
} as const;
/** A comment line now and then, so proxies and idle timers never take a quiet run for a dead stream. */
const KEEPALIVE_MS = 15_000;

/** The run states after which nothing is written until someone acts (resume): the stream ends there. */
function ended(run: PlanRun): boolean {
  return run.state !== 'running' && run.state !== 'waiting';
}

/**
 * GET /plan-runs/:id/events: a plan run as server-sent events, one `run` event (the run as
 * GET /plan-runs/:id answers it) now and after every journal write, ending when the run ends.
 * Browsers read it with fetch() so the request carries the bearer token, as every API call does.
 */
export function planRunEventRoutes(deps: { runner: PlanRunner; runs: RunJournal }): FastifyPluginAsync {
  return async (app) => {
    const open = new Set<ServerResponse>();
    // Fastify waits for in-flight requests on close; an open stream would hold the server up.
    app.addHook('preClose', async () => {
      for (const res of open) res.end();
    });
    app.get<{ Params: { id: string } }>(
      '/plan-runs/:id/events',
      {
        schema: {
          summary:
            'A run followed live (text/event-stream): a `run` event with the run and its summary now and at every journal write; ends when the run ends',
          params: runParam,
          response: {
            200: { description: 'event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        // Subscribed before reading the run, so no write between the two is missed; writes seen
        // before the stream opens wait in `early`.
        const early: PlanRun[] = [];
        let send: (run: PlanRun) => void = (run) => void early.push(run);
        const unsubscribe = deps.runs.subscribe(req.params.id, (run) => send(run));
        let first: PlanRun;
        try {
          first = await deps.runner.get(req.params.id);
        } catch (e) {
          unsubscribe();
          throw e;
        }
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          'x-accel-buffering': 'no',
        });
        open.add(res);
        const keepalive = setInterval(() => res.write(': keep-alive\n\n'), KEEPALIVE_MS);
        keepalive.unref();
        const close = (): void => {
          clearInterval(keepalive);
          unsubscribe();
          open.delete(res);
          if (!res.writableEnded) res.end();
        };
        res.on('close', close);
        send = (run) => {
          if (res.writableEnded) return;
          res.write(`event: run\ndata: ${JSON.stringify({ ...run, summary: summarizeRun(run) })}\n\n`);
          if (ended(run)) close();
        };
        send(first);
        // The live run is the newest state; older writes seen meanwhile would only step it back.
        for (const run of early) if (run.updatedAt > first.updatedAt) send(run);
      },
    );
  };
}
