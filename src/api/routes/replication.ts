import type { FastifyPluginAsync } from 'fastify';
import { checkpointRange, checkpointSchema, pointInTime } from './replicas.js';
import type { ReplicationService } from '../../replication/replication-service.js';
import { errorResponses, nameParam, peerLinkSchema } from '../schemas.js';
import { sendJsonList } from '../list-reply.js';

const statusSchema = {
  type: 'object',
  required: ['vm', 'to', 'state', 'rpoSeconds', 'cycle', 'queuePlace'],
  properties: {
    vm: { type: 'string' },
    to: { type: 'string' },
    state: { type: 'string' },
    rpoSeconds: { type: 'number' },
    points: { type: 'integer' },
    lastPointAt: { type: ['string', 'null'] },
    lagSeconds: { type: ['number', 'null'] },
    rpoViolated: { type: 'boolean' },
    rpoViolatedSince: { type: ['string', 'null'] },
    nextCycleAt: { type: ['string', 'null'] },
    failures: { type: 'integer' },
    lastError: { type: ['string', 'null'] },
    lastCycle: { type: ['object', 'null'], additionalProperties: true },
    bandwidthBps: { type: ['integer', 'null'] },
    cycle: {
      type: 'string',
      enum: ['running', 'queued', 'idle'],
      description: 'running, waiting for a slot on its peer link (queued), or neither',
    },
    queuePlace: {
      type: ['integer', 'null'],
      description: 'place among the due VMs of its peer link, 1 = next; null when not queued',
    },
    replica: {
      type: ['object', 'null'],
      description:
        'storage at the recovery site after the last point: points, the longest chain a read opens, bytes of its own files, bytes of a seed still read through',
      required: ['points', 'chainLength', 'bytes', 'seedBytes'],
      properties: {
        points: { type: 'integer' },
        chainLength: { type: 'integer' },
        bytes: { type: 'integer' },
        seedBytes: { type: 'integer' },
      },
    },
    generation: {
      type: ['integer', 'null'],
      description:
        'the replication generation: raised by each committed cycle; the source bitmap and the newest point agree on it',
    },
    continuous: {
      type: ['object', 'null'],
      description: "continuous replication's settings; null: cycles only",
      required: ['checkpointSeconds', 'journalSeconds', 'appCheckpointSeconds'],
      properties: {
        checkpointSeconds: { type: 'number' },
        journalSeconds: { type: 'number' },
        appCheckpointSeconds: {
          type: ['number', 'null'],
          description: 'between application-consistent checkpoints (the guest frozen through its agent); null: none',
        },
      },
    },
    journal: {
      type: ['object', 'null'],
      description:
        "the continuous journal's session: starting, streaming, or broken (cycles protect the VM until it starts again); null when none runs",
      required: [
        'state',
        'basePointId',
        'checkpointAt',
        'shippedAt',
        'backlogBytes',
        'error',
        'group',
        'appCheckpointAt',
        'appCheckpointError',
      ],
      properties: {
        state: { type: 'string', enum: ['starting', 'streaming', 'broken'] },
        basePointId: { type: ['string', 'null'] },
        checkpointAt: { type: ['string', 'null'], description: 'the newest checkpoint taken here' },
        shippedAt: { type: ['string', 'null'], description: 'the newest point in time the recovery site holds' },
        backlogBytes: { type: 'integer', description: 'journal bytes not yet acknowledged by the recovery site' },
        error: { type: ['string', 'null'] },
        group: {
          type: ['string', 'null'],
          description: "the protection group whose VMs share the session's checkpoints (one instant for all)",
        },
        appCheckpointAt: {
          type: ['string', 'null'],
          description: "the session's newest application-consistent checkpoint (the guest frozen)",
        },
        appCheckpointError: {
          type: ['string', 'null'],
          description:
            'why the last application-consistent checkpoint was not taken (the points stay crash-consistent)',
        },
      },
    },
  },
} as const;

const pointSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    time: { type: 'string' },
    consistency: { type: 'string' },
    committedAt: { type: 'string' },
  },
} as const;

/** The protected side: replication of this site's VMs to a paired site. */
export function replicationRoutes(deps: { replication: ReplicationService }): FastifyPluginAsync {
  const r = deps.replication;
  return async (app) => {
    app.get(
      '/replication',
      {
        schema: {
          summary: 'Replication status of every protected VM',
          response: { 200: { type: 'array', items: statusSchema }, ...errorResponses },
        },
      },
      async (req, reply) => sendJsonList(req, reply, await r.statusAll()),
    );
    app.post<{
      Params: { name: string };
      Body: {
        to: string;
        rpo?: string;
        points?: number;
        bandwidth?: string;
        continuous?: boolean;
        checkpoint?: string;
        journal?: string;
        appCheckpoint?: string;
      };
    }>(
      '/vms/:name/replication',
      {
        schema: {
          summary: 'Enable replication of a VM to a paired site',
          params: nameParam,
          body: {
            type: 'object',
            required: ['to'],
            additionalProperties: false,
            properties: {
              to: { type: 'string' },
              rpo: {
                type: 'string',
                description:
                  'required without continuous; with it, the RPO cycles keep while the journal is down (10s)',
              },
              points: { type: 'integer' },
              bandwidth: { type: 'string' },
              continuous: {
                type: 'boolean',
                description: 'journal every write at the recovery site: any point in time within the window',
              },
              checkpoint: { type: 'string', description: 'continuous: time between checkpoints (1s; 200ms to 60s)' },
              journal: { type: 'string', description: "continuous: the journal's window (4h; 1m to 30d)" },
              appCheckpoint: {
                type: 'string',
                description:
                  'continuous: time between application-consistent checkpoints, the guest frozen through its agent (15m with an agent; 10s to 24h), or off',
              },
            },
          },
          response: { 201: statusSchema, ...errorResponses },
        },
      },
      async (req, reply) => reply.status(201).send(await r.enable(req.params.name, req.body)),
    );
    app.get<{ Params: { name: string } }>(
      '/vms/:name/replication',
      {
        schema: {
          summary: "A VM's replication status",
          params: nameParam,
          response: { 200: statusSchema, ...errorResponses },
        },
      },
      async (req) => r.status(req.params.name),
    );
    app.delete<{ Params: { name: string }; Querystring: { deleteReplica?: 'true' | 'false' } }>(
      '/vms/:name/replication',
      {
        schema: {
          summary:
            'Disable replication; the replica stays at the recovery site unless deleteReplica (then a refusal there leaves the replication enabled)',
          params: nameParam,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { deleteReplica: { type: 'string', enum: ['true', 'false'] } },
          },
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await r.disable(req.params.name, { deleteReplica: req.query.deleteReplica === 'true' });
        return reply.status(204).send();
      },
    );
    for (const [action, fn] of [
      ['pause', (n: string) => r.setPaused(n, true)],
      ['resume', (n: string) => r.setPaused(n, false)],
      ['sync', (n: string) => r.syncNow(n)],
    ] as const) {
      app.post<{ Params: { name: string } }>(
        `/vms/:name/replication/${action}`,
        {
          schema: {
            summary: `${action} replication`,
            params: nameParam,
            response: { 200: statusSchema, ...errorResponses },
          },
        },
        async (req) => fn(req.params.name),
      );
    }
    app.put<{ Params: { name: string }; Body: { bandwidth?: string; schedule?: string; concurrency?: number } }>(
      '/sites/:name/link',
      {
        schema: {
          summary:
            "Replication's budget on the link to a paired site: a bandwidth cap ('50M' = 50 Mbit/s, 'none'), the windows it applies in (this site's local time; 'none': always) and the cycles in flight; fields left out stay",
          params: nameParam,
          body: {
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: {
              bandwidth: { type: 'string', minLength: 1, maxLength: 32 },
              schedule: { type: 'string', minLength: 1, maxLength: 1000 },
              concurrency: { type: 'integer' },
            },
          },
          response: {
            200: {
              ...peerLinkSchema,
              required: [...peerLinkSchema.required, 'peer'],
              properties: { ...peerLinkSchema.properties, peer: { type: 'string' } },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => r.setLink(req.params.name, req.body),
    );
    app.get<{ Params: { name: string } }>(
      '/vms/:name/replication/points',
      {
        schema: {
          summary: 'Recovery points at the recovery site',
          params: nameParam,
          response: { 200: { type: 'array', items: pointSchema }, ...errorResponses },
        },
      },
      async (req) => r.points(req.params.name),
    );
    app.get<{ Params: { name: string }; Querystring: { from?: string; to?: string } }>(
      '/vms/:name/replication/checkpoints',
      {
        schema: {
          summary: "Points in time of a continuous replica's journal at the recovery site, oldest first",
          params: nameParam,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { from: { type: 'string', maxLength: 40 }, to: { type: 'string', maxLength: 40 } },
          },
          response: { 200: { type: 'array', items: checkpointSchema }, ...errorResponses },
        },
      },
      async (req) => r.checkpoints(req.params.name, checkpointRange(req.query)),
    );
    app.post<{ Params: { name: string }; Body: { pointId?: string; at?: string } }>(
      '/vms/:name/replication/verify',
      {
        schema: {
          summary: 'Run the write-log verifier on a recovery point, or a point in time, at the recovery site',
          params: nameParam,
          body: {
            type: ['object', 'null'],
            additionalProperties: false,
            properties: { pointId: { type: 'string' }, at: { type: 'string', maxLength: 40 } },
          },
          response: {
            200: {
              type: 'object',
              properties: { point: pointSchema, report: { type: 'object', additionalProperties: true } },
            },
            ...errorResponses,
          },
        },
      },
      async (req) => r.verify(req.params.name, req.body?.pointId, pointInTime(req.body ?? {})),
    );
  };
}
