import type { FastifyPluginAsync } from 'fastify';
import type { VmService, CreateVmInput } from '../../vms/vm-service.js';
import { errorResponses, nameParam } from '../schemas.js';
import { sendJsonList } from '../list-reply.js';

const vmResponse = { 200: { $ref: 'Vm#' }, ...errorResponses } as const;

const createBody = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    vcpus: { type: 'integer' },
    memoryMiB: { type: 'integer' },
    firmware: { type: 'string' },
    machineType: { type: 'string' },
    disks: { type: 'array', items: { type: 'string' } },
    dataDisk: { type: ['string', 'integer'] },
    testGuest: { type: 'boolean' },
    writelogRate: { type: 'integer' },
    writelog: { type: 'boolean' },
    writelogPayload: { type: 'string', enum: ['random', 'text'] },
    acpi: { type: 'boolean' },
    guestAgent: { type: 'boolean' },
    diskBus: { type: 'string' },
    nics: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: { model: { type: 'string' }, network: { type: 'string' }, mac: { type: 'string' } },
      },
    },
    stopTimeoutSec: { type: 'integer' },
  },
} as const;

/** HTTP onto VmService: each route parses, calls one typed action, and shapes the answer. */
export function vmRoutes(deps: { vms: VmService }): FastifyPluginAsync {
  const { vms } = deps;
  return async (app) => {
    app.get(
      '/vms',
      {
        schema: {
          summary: 'List VMs',
          response: { 200: { type: 'array', items: { $ref: 'Vm#' } }, ...errorResponses },
        },
      },
      async (req, reply) => sendJsonList(req, reply, await vms.list()),
    );

    app.post<{ Body: CreateVmInput }>(
      '/vms',
      { schema: { summary: 'Create a VM', body: createBody, response: { 201: { $ref: 'Vm#' }, ...errorResponses } } },
      async (req, reply) => {
        const vm = await vms.create(req.body);
        return reply.status(201).send(await vms.view(vm));
      },
    );

    app.get<{ Params: { name: string } }>(
      '/vms/:name',
      { schema: { summary: 'One VM with its state and last heartbeat', params: nameParam, response: vmResponse } },
      async (req) => vms.view(await vms.get(req.params.name)),
    );

    app.delete<{ Params: { name: string }; Querystring: { force?: 'true' | 'false' } }>(
      '/vms/:name',
      {
        schema: {
          summary: 'Delete a VM and the disks made for it',
          params: nameParam,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { force: { type: 'string', enum: ['true', 'false'] } },
          },
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await vms.delete(req.params.name, { force: req.query.force === 'true' });
        return reply.status(204).send();
      },
    );

    for (const action of ['kill', 'pause'] as const) {
      app.post<{ Params: { name: string } }>(
        `/vms/:name/${action}`,
        { schema: { summary: `${action} a VM`, params: nameParam, response: vmResponse } },
        async (req) => vms.view(await vms[action](req.params.name)),
      );
    }
    // force: start (or resume) a VM the peer failed over (VM_SUPERSEDED otherwise).
    for (const action of ['start', 'resume'] as const) {
      app.post<{ Params: { name: string }; Body: { force?: boolean } | undefined }>(
        `/vms/:name/${action}`,
        {
          schema: {
            summary: `${action} a VM`,
            params: nameParam,
            body: { type: ['object', 'null'], additionalProperties: false, properties: { force: { type: 'boolean' } } },
            response: vmResponse,
          },
        },
        async (req) => vms.view(await vms[action](req.params.name, { force: req.body?.force === true })),
      );
    }

    app.post<{ Params: { name: string }; Body: { timeoutSec?: number; force?: boolean } | undefined }>(
      '/vms/:name/stop',
      {
        schema: {
          summary: 'Stop: ACPI power button, forced off after timeoutSec (or at once with force)',
          params: nameParam,
          body: {
            type: ['object', 'null'],
            additionalProperties: false,
            properties: { timeoutSec: { type: 'integer' }, force: { type: 'boolean' } },
          },
          response: {
            200: { type: 'object', properties: { forced: { type: 'boolean' }, vm: { $ref: 'Vm#' } } },
            ...errorResponses,
          },
        },
      },
      async (req) => {
        const { vm, forced } = await vms.stop(req.params.name, req.body ?? {});
        return { forced, vm: await vms.view(vm) };
      },
    );

    const snapshotSchema = {
      type: 'object',
      required: ['name', 'createdAt', 'running'],
      properties: { name: { type: 'string' }, createdAt: { type: 'string' }, running: { type: 'boolean' } },
    } as const;
    app.get<{ Params: { name: string } }>(
      '/vms/:name/snapshots',
      {
        schema: {
          summary: "A VM's snapshots, oldest first",
          params: nameParam,
          response: { 200: { type: 'array', items: snapshotSchema }, ...errorResponses },
        },
      },
      async (req) => vms.snapshots(req.params.name),
    );
    app.post<{ Params: { name: string }; Body: { name: string } }>(
      '/vms/:name/snapshots',
      {
        schema: {
          summary: 'Take an external snapshot of every disk (crash-consistent while running)',
          params: nameParam,
          body: {
            type: 'object',
            required: ['name'],
            additionalProperties: false,
            properties: { name: { type: 'string' } },
          },
          response: { 201: snapshotSchema, ...errorResponses },
        },
      },
      async (req, reply) => reply.status(201).send(await vms.snapshot(req.params.name, req.body.name)),
    );
    app.delete<{ Params: { name: string; snapshot: string } }>(
      '/vms/:name/snapshots/:snapshot',
      {
        schema: {
          summary:
            "Delete a snapshot: its layers are merged (by the VM's own QEMU while it runs); the data the VM sees and its other snapshots stay",
          params: {
            type: 'object',
            required: ['name', 'snapshot'],
            properties: {
              name: { type: 'string', minLength: 1, maxLength: 63 },
              snapshot: { type: 'string', minLength: 1, maxLength: 63 },
            },
          },
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await vms.deleteSnapshot(req.params.name, req.params.snapshot);
        return reply.status(204).send();
      },
    );

    app.get<{ Params: { name: string }; Querystring: { lines?: string } }>(
      '/vms/:name/console',
      {
        schema: {
          summary: 'The last lines of the VM serial console',
          params: nameParam,
          // Query strings arrive as text and the API does not coerce types, so the number is a pattern.
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { lines: { type: 'string', pattern: '^[1-9][0-9]{0,3}$' } },
          },
          response: {
            200: { type: 'object', properties: { lines: { type: 'array', items: { type: 'string' } } } },
            ...errorResponses,
          },
        },
      },
      async (req) => ({ lines: await vms.consoleTail(req.params.name, Number(req.query.lines ?? 20)) }),
    );
  };
}
