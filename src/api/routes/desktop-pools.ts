import type { FastifyPluginAsync } from 'fastify';
import type { PoolService } from '../../pools/pool-service.js';
import type { PoolCreateInput } from '../../pools/pool-spec.js';
import { errorResponses, nameParam } from '../schemas.js';

const free = { type: 'object', additionalProperties: true } as const;
const oneLine = { type: 'string', minLength: 1, maxLength: 4096, pattern: '^[^\\n]*$' } as const;
const desktop = { type: 'string', minLength: 1, maxLength: 63 } as const;
/** The bodies of assign/unassign and session-start/session-end: a desktop, and the user for the first of each. */
const desktopAndUser = {
  type: 'object',
  required: ['desktop', 'user'],
  additionalProperties: false,
  properties: { desktop, user: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;
const desktopOnly = {
  type: 'object',
  required: ['desktop'],
  additionalProperties: false,
  properties: { desktop },
} as const;
const size = {
  anyOf: [
    { type: 'string', maxLength: 32 },
    { type: 'integer', minimum: 1 },
  ],
} as const;

/** Desktop pools of linked clones (View Composer): provision, show, refresh, recompose, rebalance, resize, resume, delete; assignments and sessions. */
export function desktopPoolRoutes(deps: { pools: PoolService }): FastifyPluginAsync {
  const p = deps.pools;
  const s = p.sessions;
  return async (app) => {
    app.get(
      '/pools',
      {
        schema: {
          summary: 'Desktop pools of this site',
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async () => p.list(),
    );
    app.post<{ Body: PoolCreateInput }>(
      '/pools',
      {
        schema: {
          summary:
            "Create a desktop pool: a replica of the master's snapshot and linked-clone desktops, customized; returns the provisioning job",
          body: {
            type: 'object',
            required: ['name', 'master', 'snapshot', 'size', 'namePattern'],
            additionalProperties: false,
            properties: {
              name: { type: 'string' },
              master: { type: 'string' },
              snapshot: { type: 'string' },
              size: { type: 'integer' },
              namePattern: { type: 'string', maxLength: 63 },
              spare: { type: 'integer' },
              persistentDisk: size,
              disposableDisk: size,
              storage: { type: 'array', items: { type: 'string' }, maxItems: 16 },
              commands: { type: 'array', items: oneLine, maxItems: 50 },
              licenseCommand: oneLine,
              kmsHost: { type: 'string', maxLength: 260 },
              licenseTimeoutSec: { type: 'integer' },
              skipLicenseActivation: { type: 'boolean' },
              concurrency: { type: 'integer' },
              maintenanceConcurrency: { type: 'integer' },
              network: {
                type: 'object',
                required: ['mode'],
                additionalProperties: false,
                properties: {
                  mode: { type: 'string', enum: ['dhcp', 'static'] },
                  range: { type: 'string', maxLength: 40 },
                  gateway: { type: 'string', maxLength: 15 },
                  dns: { type: 'array', items: { type: 'string', maxLength: 15 }, maxItems: 3 },
                },
              },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(202).send(await p.create(req.body)),
    );
    app.get<{ Params: { name: string } }>(
      '/pools/:name',
      {
        schema: {
          summary: 'One desktop pool: its desktops, their state and own changes, and the storage saved',
          params: nameParam,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => p.show(req.params.name),
    );
    app.post<{ Params: { name: string }; Body: { desktops?: string[]; force?: boolean } | undefined }>(
      '/pools/:name/refresh',
      {
        schema: {
          summary:
            'Refresh desktops: discard their changes (back to the replica); persistent disks stay. Running desktops are skipped unless force',
          params: nameParam,
          body: {
            type: 'object',
            additionalProperties: false,
            properties: {
              desktops: { type: 'array', items: { type: 'string' }, maxItems: 2000 },
              force: { type: 'boolean' },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send(
          await p.refresh(req.params.name, {
            ...(req.body?.desktops ? { desktops: req.body.desktops } : {}),
            ...(req.body?.force ? { force: true } : {}),
          }),
        ),
    );
    app.post<{ Params: { name: string }; Body: { snapshot: string; force?: boolean } }>(
      '/pools/:name/recompose',
      {
        schema: {
          summary:
            'Recompose: a replica of another snapshot of the master, desktops rebuilt on it in rolling batches (persistent disks kept; desktops in use skipped unless force)',
          params: nameParam,
          body: {
            type: 'object',
            required: ['snapshot'],
            additionalProperties: false,
            properties: { snapshot: { type: 'string', minLength: 1, maxLength: 63 }, force: { type: 'boolean' } },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send(await p.recompose(req.params.name, req.body.snapshot, { force: req.body.force === true })),
    );
    app.post<{ Params: { name: string }; Body: { storage?: string[]; force?: boolean } | undefined }>(
      '/pools/:name/rebalance',
      {
        schema: {
          summary: "Rebalance: spread the desktops over the pool's storage pools (or a new list) by free space",
          params: nameParam,
          body: {
            type: 'object',
            additionalProperties: false,
            properties: {
              storage: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 16 },
              force: { type: 'boolean' },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send(
          await p.rebalance(req.params.name, {
            ...(req.body?.storage ? { storage: req.body.storage } : {}),
            force: req.body?.force === true,
          }),
        ),
    );
    app.post<{ Params: { name: string }; Body: { size: number; force?: boolean } }>(
      '/pools/:name/resize',
      {
        schema: {
          summary:
            'Resize: grow with new desktops, or shrink from the highest numbers (desktops in use only with force)',
          params: nameParam,
          body: {
            type: 'object',
            required: ['size'],
            additionalProperties: false,
            properties: { size: { type: 'integer' }, force: { type: 'boolean' } },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send(await p.resize(req.params.name, req.body.size, { force: req.body.force === true })),
    );
    app.post<{ Params: { name: string }; Body: { from: string; to: string } }>(
      '/pools/:name/move-persistent',
      {
        schema: {
          summary:
            "Move a stopped desktop's persistent disk to another stopped desktop of the pool (the two trade disks)",
          params: nameParam,
          body: {
            type: 'object',
            required: ['from', 'to'],
            additionalProperties: false,
            properties: {
              from: { type: 'string', minLength: 1, maxLength: 63 },
              to: { type: 'string', minLength: 1, maxLength: 63 },
            },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => p.movePersistentDisk(req.params.name, req.body.from, req.body.to),
    );
    app.post<{ Params: { name: string }; Body: { desktop: string; user: string } }>(
      '/pools/:name/assign',
      {
        schema: {
          summary:
            'Assign a desktop to a user (a dedicated desktop); it stops counting as a spare, so another may power on',
          params: nameParam,
          body: desktopAndUser,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => s.assign(req.params.name, req.body.desktop, req.body.user),
    );
    app.post<{ Params: { name: string }; Body: { desktop: string } }>(
      '/pools/:name/unassign',
      {
        schema: {
          summary:
            'Free a desktop of its user; without a session it is a spare again, powered off if the pool has more spares than its target',
          params: nameParam,
          body: desktopOnly,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => s.unassign(req.params.name, req.body.desktop),
    );
    app.post<{ Params: { name: string }; Body: { desktop: string; user: string } }>(
      '/pools/:name/session-start',
      {
        schema: {
          summary:
            "A user's session on a running desktop began (a connection broker reports it): the desktop is in use until the session ends or it powers off",
          params: nameParam,
          body: desktopAndUser,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => s.sessionStart(req.params.name, req.body.desktop, req.body.user),
    );
    app.post<{ Params: { name: string }; Body: { desktop: string } }>(
      '/pools/:name/session-end',
      {
        schema: {
          summary:
            'The session on a desktop ended: unless assigned, it is a spare again, powered off if the pool has more spares than its target',
          params: nameParam,
          body: desktopOnly,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => s.sessionEnd(req.params.name, req.body.desktop),
    );
    app.post<{ Params: { name: string } }>(
      '/pools/:name/resume',
      {
        schema: {
          summary:
            "Run a pool's failed operation again, with its first options, from where it stopped (a cut one resumes by itself at server start)",
          params: nameParam,
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(202).send(await p.resume(req.params.name)),
    );
    app.delete<{ Params: { name: string } }>(
      '/pools/:name',
      {
        schema: {
          summary: 'Delete a desktop pool: its desktops (with their persistent disks), then its replicas',
          params: nameParam,
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(202).send(await p.delete(req.params.name)),
    );
  };
}
