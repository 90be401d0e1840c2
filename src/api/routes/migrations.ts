import type { FastifyPluginAsync } from 'fastify';
import type { LiveMigrations } from '../../migration/live-migration.js';
import type { IncomingMigrations } from '../../migration/incoming-migration.js';
import type { SitePeers } from '../../sites/site-peers.js';
import type { VmDefinition } from '../../vms/vm-definition.js';
import { callerOf } from '../request-caller.js';
import { errorResponses, nameParam } from '../schemas.js';

const free = { type: 'object', additionalProperties: true } as const;
const vmIdParam = {
  type: 'object',
  required: ['vmId'],
  properties: { vmId: { type: 'string', pattern: '^[0-9a-f-]{36}$' } },
} as const;

/** Live migration: the operator's commands at the source, and the destination's side for the paired source site. */
export function migrationRoutes(deps: {
  migrations: LiveMigrations;
  incoming: IncomingMigrations;
  peers: SitePeers;
}): FastifyPluginAsync {
  const peerName = (req: Parameters<typeof callerOf>[0]): string => callerOf(req).name.replace(/^site:/, '');
  return async (app) => {
    app.post<{
      Params: { name: string };
      Body: { to: string; downtimeLimitMs?: number; bandwidthMbps?: number; linkTimeoutSec?: number };
    }>(
      '/vms/:name/migrate',
      {
        schema: {
          summary:
            'Live-migrate a running VM to a paired site (disks mirrored over NBD+TLS, RAM by pre-copy); returns the job',
          params: nameParam,
          body: {
            type: 'object',
            required: ['to'],
            additionalProperties: false,
            properties: {
              to: { type: 'string' },
              downtimeLimitMs: { type: 'integer' },
              bandwidthMbps: { type: 'integer' },
              linkTimeoutSec: { type: 'integer' },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(202).send(await deps.migrations.start(req.params.name, req.body)),
    );
    app.post<{ Params: { name: string } }>(
      '/vms/:name/migrate/cancel',
      {
        schema: {
          summary: 'Cancel a migration before switchover: the VM runs on here, nothing is left at the destination',
          params: nameParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await deps.migrations.cancel(req.params.name);
        return reply.code(204).send();
      },
    );

    app.post<{
      Body: {
        definition: Omit<VmDefinition, 'diskIds'>;
        disks: { sizeBytes: number }[];
        replicaPointId?: string;
        leaseSec?: number;
      };
    }>(
      '/migrations/incoming',
      {
        schema: {
          summary: 'Destination: an empty copy of the VM waiting for its disks (NBD+TLS) and its migration stream',
          body: {
            type: 'object',
            required: ['definition', 'disks'],
            additionalProperties: false,
            properties: {
              definition: free,
              replicaPointId: { type: 'string', pattern: '^p[0-9]{6}$' },
              leaseSec: { type: 'integer', minimum: 10, maximum: 86_400 },
              disks: {
                type: 'array',
                minItems: 1,
                maxItems: 64,
                items: {
                  type: 'object',
                  required: ['sizeBytes'],
                  properties: { sizeBytes: { type: 'integer', minimum: 1 } },
                },
              },
            },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => {
        const rec = await deps.peers.record(peerName(req));
        return deps.incoming.prepare({ name: rec.name, caPem: rec.caCertPem }, req.body);
      },
    );
    app.get<{ Params: { vmId: string } }>(
      '/migrations/outgoing/:vmId',
      {
        schema: {
          summary:
            "Source: whether its migration of the VM to the caller switched over (the caller's copy is the VM), rolled back, or is still running",
          params: vmIdParam,
          response: {
            200: {
              type: 'object',
              required: ['state'],
              properties: { state: { type: 'string', enum: ['switched', 'rolled-back', 'in-progress', 'unknown'] } },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => ({ state: await deps.migrations.outgoingState(peerName(req), req.params.vmId) }),
    );
    const summaries = {
      activate: 'Destination: the migration completed, run the VM here',
      abort: 'Destination: remove the incoming copy',
      keepalive:
        'Destination: the source still drives the migration (without it the copy removes itself once its lease runs out)',
    };
    for (const action of ['activate', 'abort', 'keepalive'] as const) {
      app.post<{ Params: { vmId: string } }>(
        `/migrations/:vmId/${action}`,
        {
          schema: {
            summary: summaries[action],
            params: vmIdParam,
            response: { 204: { type: 'null' }, ...errorResponses },
          },
        },
        async (req, reply) => {
          await deps.incoming[action](req.params.vmId);
          return reply.code(204).send();
        },
      );
    }
  };
}
