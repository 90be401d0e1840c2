import type { FastifyPluginAsync } from 'fastify';
import type { ProtectionGroups } from '../../plans/protection-groups.js';
import { errorResponses, nameParam } from '../schemas.js';
import { requireRole } from '../request-caller.js';

const groupSchema = {
  type: 'object',
  required: ['name', 'peer', 'vms', 'createdAt'],
  properties: { name: { type: 'string' }, peer: { type: 'string' }, vms: { type: 'array', items: { type: 'string' } }, createdAt: { type: 'string' } },
} as const;
const vmName = { type: 'string', minLength: 1, maxLength: 63 } as const;

/** Protection groups: named sets of replicated VMs that recovery plans recover together. */
export function protectionGroupRoutes(deps: { groups: ProtectionGroups }): FastifyPluginAsync {
  const g = deps.groups;
  const admin = requireRole('admin');
  return async (app) => {
    app.get('/protection-groups', { preHandler: admin, schema: { summary: 'Protection groups of this site', response: { 200: { type: 'array', items: groupSchema }, ...errorResponses } } }, async () => g.list());
    app.post<{ Body: { name: string; vms: string[] } }>('/protection-groups', {
      preHandler: admin,
      schema: {
        summary: 'Create a protection group of replicated VMs',
        body: { type: 'object', required: ['name', 'vms'], additionalProperties: false, properties: { name: { type: 'string' }, vms: { type: 'array', items: vmName, minItems: 1, maxItems: 1000 } } },
        response: { 201: groupSchema, ...errorResponses },
      },
    }, async (req, reply) => reply.code(201).send(await g.create(req.body.name, req.body.vms)));
    app.get<{ Params: { name: string } }>('/protection-groups/:name', { preHandler: admin, schema: { summary: 'One protection group', params: nameParam, response: { 200: groupSchema, ...errorResponses } } },
      async (req) => g.get(req.params.name));
    app.delete<{ Params: { name: string } }>('/protection-groups/:name', { preHandler: admin, schema: { summary: 'Delete a protection group (its VMs stay replicated)', params: nameParam, response: { 204: { type: 'null' }, ...errorResponses } } },
      async (req, reply) => {
        await g.delete(req.params.name);
        return reply.code(204).send();
      });
    app.post<{ Params: { name: string }; Body: { vm: string } }>('/protection-groups/:name/vms', {
      preHandler: admin,
      schema: { summary: 'Add a replicated VM to a protection group', params: nameParam, body: { type: 'object', required: ['vm'], additionalProperties: false, properties: { vm: vmName } }, response: { 200: groupSchema, ...errorResponses } },
    }, async (req) => g.add(req.params.name, req.body.vm));
    app.delete<{ Params: { name: string; vm: string } }>('/protection-groups/:name/vms/:vm', {
      preHandler: admin,
      schema: { summary: 'Remove a VM from a protection group', params: { type: 'object', required: ['name', 'vm'], properties: { name: vmName, vm: vmName } }, response: { 200: groupSchema, ...errorResponses } },
    }, async (req) => g.remove(req.params.name, req.params.vm));
  };
}
