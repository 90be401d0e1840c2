import type { FastifyPluginAsync } from 'fastify';
import type { ReplicaService } from '../../replication/replica-service.js';
import type { SitePeers } from '../../sites/site-peers.js';
import { callerOf } from '../request-caller.js';
import { errorResponses } from '../schemas.js';
import { MamoriError } from '../../core/mamori-error.js';
import { assertSourceDone } from '../../replication/replica-source-check.js';

const idParam = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: '^[A-Za-z0-9-]{1,64}$' } },
} as const;
const storageSchema = {
  type: 'object',
  required: ['points', 'chainLength', 'bytes', 'seedBytes'],
  properties: {
    points: { type: 'integer' },
    chainLength: { type: 'integer' },
    bytes: { type: 'integer' },
    seedBytes: { type: 'integer' },
  },
} as const;
const pointSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    time: { type: 'string' },
    consistency: { type: 'string' },
    committedAt: { type: 'string' },
    storage: storageSchema,
  },
} as const;
const replicaSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    sourceSite: { type: 'string' },
    sourceVmId: { type: 'string' },
    vmName: { type: 'string' },
    keepPoints: { type: 'integer' },
    disks: {
      type: 'array',
      items: { type: 'object', properties: { index: { type: 'integer' }, sizeBytes: { type: 'integer' } } },
    },
    points: { type: 'array', items: pointSchema },
    failoverGeneration: { type: 'integer' },
    promotedAt: { type: ['string', 'null'] },
    lastContactAt: { type: ['string', 'null'] },
  },
} as const;
const summarySchema = {
  type: 'object',
  properties: {
    ...replicaSchema.properties,
    state: { type: 'string', enum: ['receiving', 'promoted', 'retired'] },
    storage: storageSchema,
    usedBy: {
      type: 'object',
      properties: {
        vms: {
          type: 'array',
          items: { type: 'object', properties: { name: { type: 'string' }, state: { type: 'string' } } },
        },
        replicas: { type: 'array', items: { type: 'string' } },
      },
    },
    journal: {
      type: ['object', 'null'],
      description:
        "a continuous replica's journal: what it holds, the rate it grows at (null until it covers a minute), what its window takes at that rate (epochs' overlap included) and the room it has here (its bytes and the free space); null without a journal",
      required: ['bytes', 'bytesPerSecond', 'windowSeconds', 'neededBytes', 'availableBytes', 'fits'],
      properties: {
        bytes: { type: 'integer' },
        bytesPerSecond: { type: ['integer', 'null'] },
        windowSeconds: { type: 'number' },
        neededBytes: { type: ['integer', 'null'] },
        availableBytes: { type: 'integer' },
        fits: { type: ['boolean', 'null'] },
      },
    },
  },
} as const;

export const checkpointSchema = {
  type: 'object',
  required: ['time', 'seq', 'applicationConsistent'],
  properties: { time: { type: 'string' }, seq: { type: 'integer' }, applicationConsistent: { type: 'boolean' } },
} as const;

/** `from` and `to` (ISO times, either left out) as µs since the epoch; a time that does not parse is refused. */
export function checkpointRange(q: { from?: string; to?: string }): { fromUs?: number; toUs?: number } {
  const fromUs = timeUs('from', q.from);
  const toUs = timeUs('to', q.to);
  if (fromUs !== undefined && toUs !== undefined && fromUs > toUs)
    throw new MamoriError('INVALID_INPUT', `from (${q.from}) is after to (${q.to})`);
  return { ...(fromUs === undefined ? {} : { fromUs }), ...(toUs === undefined ? {} : { toUs }) };
}

/** `at` of a verify (an ISO time) as µs since the epoch; with a point id too it is refused. */
export function pointInTime(body: { pointId?: string; at?: string }): number | undefined {
  if (body.at === undefined) return undefined;
  if (body.pointId !== undefined)
    throw new MamoriError('INVALID_INPUT', 'give a point (--point ID) or a point in time (--at T), not both');
  return timeUs('at', body.at);
}

/** An ISO time given as `name`, in µs since the epoch (undefined stays so); one that does not parse is refused. */
function timeUs(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = Date.parse(v);
  if (!Number.isFinite(ms))
    throw new MamoriError(
      'INVALID_INPUT',
      `${name} ${JSON.stringify(v)} is not a time: give ISO 8601, e.g. 2026-12-07T05:30:00Z`,
    );
  return ms * 1000;
}

/**
 * The recovery side, called by paired sites with their site token: the caller's name
 * comes from its token, never from the request body, and a site sees only its own replicas.
 */
export function replicaRoutes(deps: { replicas: ReplicaService; peers: SitePeers }): FastifyPluginAsync {
  const { replicas, peers } = deps;
  const peerName = (req: Parameters<typeof callerOf>[0]): string => callerOf(req).name.replace(/^site:/, '');
  const owned = async (req: Parameters<typeof callerOf>[0], id: string) => {
    const r = await replicas.get(id);
    if (r.sourceSite !== peerName(req))
      throw new MamoriError('NOT_FOUND', `no replica ${id} for site ${peerName(req)}`);
    return r;
  };
  return async (app) => {
    // The operator's view at the recovery site: every replica it holds, for any peer.
    app.get(
      '/site-replicas',
      {
        schema: {
          summary: 'Replicas this site holds for its peers, with their state and storage',
          response: { 200: { type: 'array', items: summarySchema }, ...errorResponses },
        },
      },
      async () => Promise.all((await replicas.list()).map((r) => replicas.summary(r.id))),
    );
    app.get<{ Params: { id: string } }>(
      '/site-replicas/:id',
      {
        schema: {
          summary: 'A replica this site holds: points, storage and what uses it',
          params: idParam,
          response: { 200: summarySchema, ...errorResponses },
        },
      },
      async (req) => replicas.summary(req.params.id),
    );
    app.delete<{ Params: { id: string }; Querystring: { force?: 'true' | 'false' } }>(
      '/site-replicas/:id',
      {
        schema: {
          summary:
            'Delete a replica, its files and rows: refused while a VM made from it exists, another replica reads it as a seed, or its source still replicates into it',
          params: idParam,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              force: {
                type: 'string',
                enum: ['true', 'false'],
                description:
                  'delete although the source site cannot be asked (gone for good); never overrides a VM or a source that answers',
              },
            },
          },
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await replicas.delete(req.params.id, (r) => assertSourceDone(peers, r, req.query.force === 'true'));
        return reply.status(204).send();
      },
    );
    app.post<{
      Body: { sourceVmId: string; vmName: string; keepPoints: number; disks: { index: number; sizeBytes: number }[] };
    }>(
      '/replicas',
      {
        schema: {
          summary: 'Create (or find) the replica of a VM of the calling site',
          body: {
            type: 'object',
            required: ['sourceVmId', 'vmName', 'keepPoints', 'disks'],
            additionalProperties: false,
            properties: {
              sourceVmId: { type: 'string' },
              vmName: { type: 'string' },
              keepPoints: { type: 'integer', minimum: 1, maximum: 1000 },
              disks: {
                type: 'array',
                minItems: 1,
                items: {
                  type: 'object',
                  required: ['index', 'sizeBytes'],
                  properties: { index: { type: 'integer', minimum: 0 }, sizeBytes: { type: 'integer', minimum: 1 } },
                },
              },
            },
          },
          response: { 200: replicaSchema, ...errorResponses },
        },
      },
      async (req) => replicas.create({ ...req.body, sourceSite: peerName(req) }),
    );
    app.delete<{ Params: { id: string } }>(
      '/replicas/:id',
      {
        schema: {
          summary:
            'The source disabled its replication and asks this site to delete the replica (refused while a VM here uses it)',
          params: idParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await owned(req, req.params.id);
        // The caller is the source: its word that it no longer replicates into it is the check.
        await replicas.delete(req.params.id, async () => undefined);
        return reply.status(204).send();
      },
    );
    app.get<{ Params: { id: string } }>(
      '/replicas/:id',
      {
        schema: {
          summary: 'A replica and its recovery points',
          params: idParam,
          response: { 200: replicaSchema, ...errorResponses },
        },
      },
      async (req) => owned(req, req.params.id),
    );
    app.post<{ Params: { id: string } }>(
      '/replicas/:id/cycles',
      {
        schema: {
          summary: "Open a staging layer per disk; the data goes through each disk's stream (an upgraded GET)",
          params: idParam,
          response: {
            200: {
              type: 'object',
              properties: {
                cycleId: { type: 'string' },
                exports: { type: 'array', items: { type: 'string' } },
              },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        return replicas.beginCycle(req.params.id);
      },
    );
    app.post<{ Params: { id: string; cycleId: string }; Body: { time: string; consistency: 'crash' | 'application' } }>(
      '/replicas/:id/cycles/:cycleId/commit',
      {
        schema: {
          summary: 'Make the staging layer a recovery point',
          params: {
            type: 'object',
            required: ['id', 'cycleId'],
            properties: { id: { type: 'string' }, cycleId: { type: 'string' } },
          },
          body: {
            type: 'object',
            required: ['time', 'consistency'],
            additionalProperties: false,
            properties: {
              time: { type: 'string', format: 'date-time' },
              consistency: { type: 'string', enum: ['crash', 'application'] },
            },
          },
          response: { 200: pointSchema, ...errorResponses },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        return replicas.commitCycle(req.params.id, req.params.cycleId, req.body);
      },
    );
    app.post<{
      Params: { id: string; cycleId: string };
      Body: { disk: number; offset: number; length: number; chunkSize: number };
    }>(
      '/replicas/:id/cycles/:cycleId/checksums',
      {
        schema: {
          summary: "SHA-256 digests of a span of a disk's newest point, in chunks (a resync after a lost bitmap)",
          params: {
            type: 'object',
            required: ['id', 'cycleId'],
            properties: { id: { type: 'string' }, cycleId: { type: 'string' } },
          },
          body: {
            type: 'object',
            required: ['disk', 'offset', 'length', 'chunkSize'],
            additionalProperties: false,
            properties: {
              disk: { type: 'integer', minimum: 0 },
              offset: { type: 'integer', minimum: 0 },
              length: { type: 'integer', minimum: 1 },
              chunkSize: { type: 'integer', minimum: 65536, maximum: 4194304 },
            },
          },
          response: {
            200: {
              type: 'object',
              required: ['digests'],
              properties: { digests: { type: 'string', description: 'base64 of the 32-byte digests, in chunk order' } },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        return { digests: (await replicas.checksums(req.params.id, req.params.cycleId, req.body)).toString('base64') };
      },
    );
    const range = {
      type: 'object',
      required: ['offset', 'length'],
      properties: { offset: { type: 'integer' }, length: { type: 'integer' } },
    } as const;
    app.get<{ Params: { id: string } }>(
      '/replicas/:id/seed-delta',
      {
        schema: {
          summary:
            "Reprotect: per disk, the blocks the seed (this site's old disks) wrote after its last point, or known: false when its bitmap was lost",
          params: idParam,
          response: {
            200: {
              type: 'object',
              required: ['delta'],
              properties: {
                delta: {
                  type: ['object', 'null'],
                  properties: {
                    disks: {
                      type: 'array',
                      items: {
                        type: 'object',
                        required: ['known'],
                        properties: {
                          known: { type: 'boolean' },
                          since: { type: 'string' },
                          reason: { type: 'string' },
                          extents: { type: 'array', items: range },
                        },
                      },
                    },
                  },
                },
              },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        return { delta: await replicas.seedDelta(req.params.id) };
      },
    );
    app.post<{ Params: { id: string } }>(
      '/replicas/:id/cycles/abort',
      {
        schema: {
          summary: 'Discard the open staging layer',
          params: idParam,
          response: { 200: { type: 'object', properties: { aborted: { type: 'boolean' } } }, ...errorResponses },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        await replicas.abortCycle(req.params.id);
        return { aborted: true };
      },
    );
    app.post<{ Params: { id: string }; Body: { basePointId: string; windowSeconds?: number } }>(
      '/replicas/:id/journal',
      {
        schema: {
          summary:
            "Start a new epoch of the replica's continuous-replication journal over one of its points (epochs older than the window go)",
          params: idParam,
          body: {
            type: 'object',
            required: ['basePointId'],
            additionalProperties: false,
            properties: {
              basePointId: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' },
              windowSeconds: { type: 'integer', minimum: 60, maximum: 2_592_000 },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: {
                basePointId: { type: 'string' },
                disks: { type: 'array', items: { type: 'integer' } },
                startedAt: { type: 'string' },
                windowMs: { type: 'integer' },
              },
            },
            ...errorResponses,
          },
        },
      },
      async (req) =>
        replicas.beginJournal(
          req.params.id,
          peerName(req),
          req.body.basePointId,
          req.body.windowSeconds === undefined ? undefined : req.body.windowSeconds * 1000,
        ),
    );
    app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string } }>(
      '/replicas/:id/checkpoints',
      {
        schema: {
          summary: "The journal's checkpoints (points in time) within a range, oldest first",
          params: idParam,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { from: { type: 'string', maxLength: 40 }, to: { type: 'string', maxLength: 40 } },
          },
          response: { 200: { type: 'array', items: checkpointSchema }, ...errorResponses },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        return replicas.checkpoints(req.params.id, checkpointRange(req.query));
      },
    );
    app.post<{ Params: { id: string }; Body: { pointId?: string; at?: string } }>(
      '/replicas/:id/verify',
      {
        schema: {
          summary: 'Verify the write log of a point, or of a continuous replica at a point in time',
          params: idParam,
          body: {
            type: ['object', 'null'],
            additionalProperties: false,
            properties: { pointId: { type: 'string' }, at: { type: 'string', maxLength: 40 } },
          },
          response: { 200: { type: 'object', additionalProperties: true }, ...errorResponses },
        },
      },
      async (req) => {
        await owned(req, req.params.id);
        return replicas.verify(req.params.id, req.body?.pointId, pointInTime(req.body ?? {}));
      },
    );
  };
}
