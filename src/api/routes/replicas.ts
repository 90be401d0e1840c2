import type { FastifyPluginAsync } from 'fastify';
import type { ReplicaService } from '../../replication/replica-service.js';
import type { SitePeers } from '../../sites/site-peers.js';
import { callerOf } from '../request-caller.js';
import { errorResponses } from '../schemas.js';
import { MamoriError } from '../../core/mamori-error.js';

const idParam = { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[A-Za-z0-9-]{1,64}$' } } } as const;
const pointSchema = { type: 'object', properties: { id: { type: 'string' }, time: { type: 'string' }, consistency: { type: 'string' }, committedAt: { type: 'string' } } } as const;
const replicaSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' }, sourceSite: { type: 'string' }, sourceVmId: { type: 'string' }, vmName: { type: 'string' }, keepPoints: { type: 'integer' },
    disks: { type: 'array', items: { type: 'object', properties: { index: { type: 'integer' }, sizeBytes: { type: 'integer' } } } },
    points: { type: 'array', items: pointSchema },
    failoverGeneration: { type: 'integer' }, promotedAt: { type: ['string', 'null'] }, lastContactAt: { type: ['string', 'null'] },
  },
} as const;

/**
 * The recovery side, called by paired sites with their site token: the caller's name
 * comes from its token, never from the request body, and a site sees only its own replicas.
 */
export function replicaRoutes(deps: { replicas: ReplicaService; peers: SitePeers }): FastifyPluginAsync {
  const { replicas, peers } = deps;
  const peerName = (req: Parameters<typeof callerOf>[0]): string => callerOf(req).name.replace(/^site:/, '');
  const owned = async (req: Parameters<typeof callerOf>[0], id: string) => {
    const r = await replicas.get(id);
    if (r.sourceSite !== peerName(req)) throw new MamoriError('NOT_FOUND', `no replica ${id} for site ${peerName(req)}`);
    return r;
  };
  return async (app) => {
    app.post<{ Body: { sourceVmId: string; vmName: string; keepPoints: number; disks: { index: number; sizeBytes: number }[] } }>('/replicas', {
      schema: {
        summary: 'Create (or find) the replica of a VM of the calling site',
        body: {
          type: 'object', required: ['sourceVmId', 'vmName', 'keepPoints', 'disks'], additionalProperties: false,
          properties: {
            sourceVmId: { type: 'string' }, vmName: { type: 'string' }, keepPoints: { type: 'integer', minimum: 1, maximum: 1000 },
            disks: { type: 'array', minItems: 1, items: { type: 'object', required: ['index', 'sizeBytes'], properties: { index: { type: 'integer', minimum: 0 }, sizeBytes: { type: 'integer', minimum: 1 } } } },
          },
        },
        response: { 200: replicaSchema, ...errorResponses },
      },
    }, async (req) => replicas.create({ ...req.body, sourceSite: peerName(req) }));
    app.get<{ Params: { id: string } }>('/replicas/:id', { schema: { summary: 'A replica and its recovery points', params: idParam, response: { 200: replicaSchema, ...errorResponses } } }, async (req) => owned(req, req.params.id));
    app.post<{ Params: { id: string } }>('/replicas/:id/cycles', {
      schema: { summary: 'Open a staging layer and serve it over NBD with TLS', params: idParam, response: { 200: { type: 'object', properties: { cycleId: { type: 'string' }, host: { type: 'string' }, port: { type: 'integer' }, exports: { type: 'array', items: { type: 'string' } } } }, ...errorResponses } },
    }, async (req) => {
      await owned(req, req.params.id);
      const rec = await peers.record(peerName(req));
      return replicas.beginCycle(req.params.id, { name: rec.name, caPem: rec.caCertPem });
    });
    app.post<{ Params: { id: string; cycleId: string }; Body: { time: string; consistency: 'crash' | 'application' } }>('/replicas/:id/cycles/:cycleId/commit', {
      schema: {
        summary: 'Make the staging layer a recovery point',
        params: { type: 'object', required: ['id', 'cycleId'], properties: { id: { type: 'string' }, cycleId: { type: 'string' } } },
        body: { type: 'object', required: ['time', 'consistency'], additionalProperties: false, properties: { time: { type: 'string', format: 'date-time' }, consistency: { type: 'string', enum: ['crash', 'application'] } } },
        response: { 200: pointSchema, ...errorResponses },
      },
    }, async (req) => {
      await owned(req, req.params.id);
      return replicas.commitCycle(req.params.id, req.params.cycleId, req.body);
    });
    app.post<{ Params: { id: string; cycleId: string }; Body: { disk: number; offset: number; length: number; chunkSize: number } }>('/replicas/:id/cycles/:cycleId/checksums', {
      schema: {
        summary: 'SHA-256 digests of a span of a disk\'s newest point, in chunks (a resync after a lost bitmap)',
        params: { type: 'object', required: ['id', 'cycleId'], properties: { id: { type: 'string' }, cycleId: { type: 'string' } } },
        body: {
          type: 'object', required: ['disk', 'offset', 'length', 'chunkSize'], additionalProperties: false,
          properties: { disk: { type: 'integer', minimum: 0 }, offset: { type: 'integer', minimum: 0 }, length: { type: 'integer', minimum: 1 }, chunkSize: { type: 'integer', minimum: 65536, maximum: 4194304 } },
        },
        response: { 200: { type: 'object', required: ['digests'], properties: { digests: { type: 'string', description: 'base64 of the 32-byte digests, in chunk order' } } }, ...errorResponses },
      },
    }, async (req) => {
      await owned(req, req.params.id);
      return { digests: (await replicas.checksums(req.params.id, req.params.cycleId, req.body)).toString('base64') };
    });
    const range = { type: 'object', required: ['offset', 'length'], properties: { offset: { type: 'integer' }, length: { type: 'integer' } } } as const;
    app.get<{ Params: { id: string } }>('/replicas/:id/seed-delta', {
      schema: {
        summary: "Reprotect: per disk, the blocks the seed (this site's old disks) wrote after its last point, or known: false when its bitmap was lost",
        params: idParam,
        response: { 200: { type: 'object', required: ['delta'], properties: { delta: { type: ['object', 'null'], properties: { disks: { type: 'array', items: {
          type: 'object', required: ['known'], properties: { known: { type: 'boolean' }, since: { type: 'string' }, reason: { type: 'string' }, extents: { type: 'array', items: range } },
        } } } } } }, ...errorResponses },
      },
    }, async (req) => {
      await owned(req, req.params.id);
      return { delta: await replicas.seedDelta(req.params.id) };
    });
    app.post<{ Params: { id: string } }>('/replicas/:id/cycles/abort', { schema: { summary: 'Discard the open staging layer', params: idParam, response: { 200: { type: 'object', properties: { aborted: { type: 'boolean' } } }, ...errorResponses } } }, async (req) => {
      await owned(req, req.params.id);
      await replicas.abortCycle(req.params.id);
      return { aborted: true };
    });
    app.post<{ Params: { id: string }; Body: { pointId?: string } }>('/replicas/:id/verify', {
      schema: { summary: 'Verify the write log of a point', params: idParam, body: { type: ['object', 'null'], additionalProperties: false, properties: { pointId: { type: 'string' } } }, response: { 200: { type: 'object', additionalProperties: true }, ...errorResponses } },
    }, async (req) => {
      await owned(req, req.params.id);
      return replicas.verify(req.params.id, req.body?.pointId);
    });
  };
}
