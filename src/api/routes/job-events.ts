import type { FastifyPluginAsync } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { Job, JobJournal } from '../../jobs/job-journal.js';
import { errorResponses } from '../schemas.js';

const jobParam = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^(job|run)-[a-z0-9]{1,40}$' } },
} as const;
/** A comment line now and then, so proxies and idle timers never take a quiet job for a dead stream. */
const KEEPALIVE_MS = 15_000;

/**
 * What a job of some kind adds to each event: a plan run's job carries the run (VM outcomes,
 * data-loss bounds, the summary) that the console's run page draws. Read after the job, so it
 * is at least as new.
 */
export type JobEventDetail = (job: Job) => Promise<Record<string, unknown>>;

/** After these nothing is written until someone acts (a resume): the stream ends there. */
function ended(job: Job): boolean {
  return job.state !== 'running';
}

/**
 * GET /jobs/:id/events: any job as server-sent events (issue 20: one stream for every kind),
 * one `job` event with the job (as GET /jobs/:id answers it, plus its kind's detail) now and
 * after every journal write, ending when the job ends. Browsers read it with fetch() so the
 * request carries the bearer token, as every API call does.
 */
export function jobEventRoutes(deps: {
  jobs: JobJournal;
  details: Record<string, JobEventDetail>;
}): FastifyPluginAsync {
  return async (app) => {
    const open = new Set<ServerResponse>();
    // Fastify waits for in-flight requests on close; an open stream would hold the server up.
    app.addHook('preClose', async () => {
      for (const res of open) res.end();
    });
    app.get<{ Params: { id: string } }>(
      '/jobs/:id/events',
      {
        schema: {
          summary:
            "A job followed live (text/event-stream): a `job` event with the job and its kind's detail (a plan run's `run`) now and at every journal write; ends when the job ends",
          params: jobParam,
          response: {
            200: { description: 'event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        // Subscribed before reading the job, so no write between the two is missed; writes seen
        // before the stream opens wait in `early`.
        const early: Job[] = [];
        let send: (job: Job) => void = (job) => void early.push(job);
        const unsubscribe = deps.jobs.subscribe(req.params.id, (job) => send(job));
        let first: Job;
        try {
          first = await deps.jobs.get(req.params.id);
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
        // Events go out in write order: each waits for the one before (its detail is a read).
        let chain = Promise.resolve();
        const detail = deps.details[first.kind];
        send = (job) => {
          chain = chain.then(async () => {
            if (res.writableEnded) return;
            const extra = detail ? await detail(job).catch(() => ({})) : {};
            if (res.writableEnded) return;
            res.write(`event: job\ndata: ${JSON.stringify({ ...job, ...extra })}\n\n`);
            if (ended(job)) close();
          });
        };
        send(first);
        // The job as read is the newest state; older writes seen meanwhile would only step it back.
        for (const job of early) if (job.updatedAt > first.updatedAt) send(job);
      },
    );
  };
}
