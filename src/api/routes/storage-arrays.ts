import type { FastifyPluginAsync } from 'fastify';
import type { StorageArrays } from '../../adapters/storage-arrays.js';
import { errorResponses, nameParam } from '../schemas.js';

const free = { type: 'object', additionalProperties: true } as const;

/** Storage arrays reached through adapters (array-based replication), and the compatibility check. */
export function storageArrayRoutes(deps: { storageArrays: StorageArrays }): FastifyPluginAsync {
  const a = deps.storageArrays;
  return async (app) => {
    app.get(
      '/arrays',
      {
        schema: {
          summary: 'Storage array entries: an adapter and its connection (secrets masked)',
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async () => a.list(),
    );
    app.post<{ Body: { name: string; adapter: string; connection?: Record<string, string> } }>(
      '/arrays',
      {
        schema: {
          summary:
            'Add a storage array entry: the adapter must answer with this connection and find at least one array',
          body: {
            type: 'object',
            required: ['name', 'adapter'],
            additionalProperties: false,
            properties: {
              name: { type: 'string' },
              adapter: { type: 'string', minLength: 1, maxLength: 4096 },
              connection: {
                type: 'object',
                additionalProperties: { type: 'string', maxLength: 4096 },
                maxProperties: 64,
              },
            },
          },
          response: { 201: free, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply
          .code(201)
          .send(await a.add({ name: req.body.name, adapter: req.body.adapter, connection: req.body.connection ?? {} })),
    );
    app.get<{ Params: { name: string } }>(
      '/arrays/:name/devices',
      {
        schema: {
          summary: "An entry's arrays and their devices: replication peers, roles and consistency groups",
          params: nameParam,
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async (req) => a.devices(req.params.name),
    );
    app.delete<{ Params: { name: string } }>(
      '/arrays/:name',
      {
        schema: {
          summary: 'Remove a storage array entry (the array itself is not touched)',
          params: nameParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await a.remove(req.params.name);
        return reply.code(204).send();
      },
    );
    app.get(
      '/compat/check',
      {
        schema: {
          summary: 'Every configured array against the compatibility guide: supported or not, and why',
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async () => a.compatCheck(),
    );
  };
}
