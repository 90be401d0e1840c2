import type { FastifyPluginAsync } from 'fastify';
import type { StorageBench } from '../../disks/storage-bench.js';
import { errorResponses } from '../schemas.js';

/** `mamori bench storage`: image disks against raw device mappings, measured inside a test guest. */
export function storageBenchRoutes(deps: { storageBench: StorageBench }): FastifyPluginAsync {
  return async (app) => {
    app.post<{ Body: { mib?: number; seconds?: number } | undefined }>(
      '/bench/storage',
      {
        schema: {
          summary:
            'Measure a qcow2 image, a raw image and RDMs in virtual and physical mode on the same storage, inside a test guest; returns the job',
          body: {
            type: 'object',
            additionalProperties: false,
            properties: { mib: { type: 'integer' }, seconds: { type: 'integer' } },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send(
          await deps.storageBench.start({
            ...(req.body?.mib !== undefined ? { mib: req.body.mib } : {}),
            ...(req.body?.seconds !== undefined ? { seconds: req.body.seconds } : {}),
          }),
        ),
    );
  };
}
