import type { FastifyPluginAsync } from 'fastify';
import type { ProtectionGroups } from '../../plans/protection-groups.js';
import { errorResponses, nameParam } from '../schemas.js';
import { MamoriError } from '../../core/mamori-error.js';
import type { ArrayGroups } from '../../array-groups/array-groups.js';

const groupSchema = {
  type: 'object',
  required: ['name', 'kind', 'peer', 'vms', 'createdAt'],
  properties: {
    name: { type: 'string' },
    kind: { type: 'string', enum: ['host', 'array'] },
    peer: { type: 'string' },
    vms: { type: 'array', items: { type: 'string' } },
    createdAt: { type: 'string' },
    array: {
      type: 'object',
      required: ['storage', 'arrayId', 'deviceIds', 'peer', 'forced', 'compat', 'problems', 'sync'],
      properties: {
        storage: { type: 'string' },
        arrayId: { type: 'string' },
        deviceIds: { type: 'array', items: { type: 'string' } },
        peer: { type: 'string' },
        forced: { type: 'boolean' },
        compat: { type: 'string' },
        problems: {
          type: 'array',
          items: {
            type: 'object',
            required: ['vm', 'reason'],
            properties: { vm: { type: 'string' }, reason: { type: 'string' } },
          },
        },
        rpoSeconds: { type: ['number', 'null'] },
        sync: { type: 'object', additionalProperties: true },
      },
    },
  },
} as const;
const deviceId = { type: 'string', minLength: 1, maxLength: 255 } as const;
const vmName = { type: 'string', minLength: 1, maxLength: 63 } as const;

/** Protection groups: named sets of replicated VMs that recovery plans recover together. */
export function protectionGroupRoutes(deps: {
  groups: ProtectionGroups;
  arrayGroups: ArrayGroups;
}): FastifyPluginAsync {
  const g = deps.groups;
  return async (app) => {
    app.get(
      '/protection-groups',
      {
        schema: {
          summary: 'Protection groups of this site',
          response: { 200: { type: 'array', items: groupSchema }, ...errorResponses },
        },
      },
      async () => g.list(),
    );
    type ArrayBody = {
      storage: string;
      arrayId?: string;
      deviceIds: string[];
      peer: string;
      force?: boolean;
      rpo?: string;
    };
    app.post<{ Body: { name: string; vms?: string[]; array?: ArrayBody } }>(
      '/protection-groups',
      {
        schema: {
          summary:
            'Create a protection group: of replicated VMs (vms), or bound to replicated devices of an array (array), protecting the VMs on them',
          body: {
            type: 'object',
            required: ['name'],
            additionalProperties: false,
            properties: {
              name: { type: 'string' },
              vms: { type: 'array', items: vmName, minItems: 1, maxItems: 1000 },
              array: {
                type: 'object',
                required: ['storage', 'deviceIds', 'peer'],
                additionalProperties: false,
                properties: {
                  storage: vmName,
                  arrayId: deviceId,
                  deviceIds: { type: 'array', items: deviceId, minItems: 1, maxItems: 256 },
                  peer: vmName,
                  force: { type: 'boolean' },
                  rpo: { type: 'string', maxLength: 16 },
                },
              },
            },
          },
          response: { 201: groupSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const { name, vms, array } = req.body;
        if ((vms === undefined) === (array === undefined))
          throw new MamoriError(
            'INVALID_INPUT',
            'a protection group has either VMs (--vm VM) or array devices (--storage ENTRY --device ID --to SITE), not both',
          );
        const view = array
          ? await g.createArray(name, { ...array, force: array.force ?? false })
          : await g.create(name, vms!);
        return reply.code(201).send(view);
      },
    );
    app.post<{ Params: { name: string } }>(
      '/protection-groups/:name/sync',
      {
        schema: {
          summary: 'An array-based group: one point of its devices now, sent to the peer array',
          params: nameParam,
          response: { 200: { type: 'object', additionalProperties: true }, ...errorResponses },
        },
      },
      async (req) => deps.arrayGroups.scheduler.syncNow(req.params.name),
    );
    app.get<{ Params: { name: string } }>(
      '/protection-groups/:name',
      {
        schema: {
          summary: 'One protection group',
          params: nameParam,
          response: { 200: groupSchema, ...errorResponses },
        },
      },
      async (req) => g.get(req.params.name),
    );
    app.delete<{ Params: { name: string } }>(
      '/protection-groups/:name',
      {
        schema: {
          summary: 'Delete a protection group (its VMs stay replicated)',
          params: nameParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await g.delete(req.params.name);
        return reply.code(204).send();
      },
    );
    app.post<{ Params: { name: string }; Body: { vm: string } }>(
      '/protection-groups/:name/vms',
      {
        schema: {
          summary: 'Add a replicated VM to a protection group',
          params: nameParam,
          body: { type: 'object', required: ['vm'], additionalProperties: false, properties: { vm: vmName } },
          response: { 200: groupSchema, ...errorResponses },
        },
      },
      async (req) => g.add(req.params.name, req.body.vm),
    );
    app.delete<{ Params: { name: string; vm: string } }>(
      '/protection-groups/:name/vms/:vm',
      {
        schema: {
          summary: 'Remove a VM from a protection group',
          params: { type: 'object', required: ['name', 'vm'], properties: { name: vmName, vm: vmName } },
          response: { 200: groupSchema, ...errorResponses },
        },
      },
      async (req) => g.remove(req.params.name, req.params.vm),
    );
  };
}
