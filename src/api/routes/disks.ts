import type { FastifyPluginAsync } from 'fastify';
import type { DiskService } from '../../disks/disk-service.js';
import { parseSize } from '../../core/names.js';
import type { ImageFormat, RdmMode } from '../../disks/disk-record.js';
import { errorResponses, nameParam } from '../schemas.js';

interface CreateBody {
  name: string;
  size?: string | number;
  format?: ImageFormat;
  path?: string;
  shared?: boolean;
  onArray?: { storage: string; deviceId: string; arrayId?: string };
  rdm?: { device: string; mode?: RdmMode };
}

export function diskRoutes(deps: { disks: DiskService }): FastifyPluginAsync {
  const { disks } = deps;
  return async (app) => {
    app.get(
      '/disks',
      {
        schema: {
          summary: 'List disks',
          response: { 200: { type: 'array', items: { $ref: 'Disk#' } }, ...errorResponses },
        },
      },
      async () => disks.list(),
    );

    app.get<{ Params: { name: string } }>(
      '/disks/:name',
      { schema: { summary: 'One disk', params: nameParam, response: { 200: { $ref: 'Disk#' }, ...errorResponses } } },
      async (req) => disks.get(req.params.name),
    );

    app.post<{ Body: CreateBody }>(
      '/disks',
      {
        schema: {
          summary: 'Create an image disk in the storage pool, or map a host device (rdm)',
          body: {
            type: 'object',
            required: ['name'],
            additionalProperties: false,
            properties: {
              name: { type: 'string' },
              size: { type: ['string', 'integer'] },
              format: { type: 'string' },
              path: { type: 'string' },
              shared: { type: 'boolean' },
              rdm: {
                type: 'object',
                required: ['device'],
                additionalProperties: false,
                properties: { device: { type: 'string' }, mode: { type: 'string' } },
              },
              onArray: {
                type: 'object',
                required: ['storage', 'deviceId'],
                additionalProperties: false,
                properties: {
                  storage: { type: 'string', minLength: 1, maxLength: 63 },
                  deviceId: { type: 'string', minLength: 1, maxLength: 255 },
                  arrayId: { type: 'string', minLength: 1, maxLength: 255 },
                },
              },
            },
          },
          response: { 201: { $ref: 'Disk#' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        const b = req.body;
        const disk = b.rdm
          ? await disks.createRdm({
              name: b.name,
              device: b.rdm.device,
              mode: b.rdm.mode ?? 'virtual',
              shared: b.shared ?? false,
            })
          : await disks.create({
              name: b.name,
              sizeBytes: parseSize(b.size ?? ''),
              format: b.format ?? 'qcow2',
              shared: b.shared ?? false,
              ...(b.path ? { path: b.path } : {}),
              ...(b.onArray ? { onArray: b.onArray } : {}),
            });
        return reply.status(201).send(disk);
      },
    );

    app.post<{ Body: { name: string; source: string; format?: string; targetFormat?: ImageFormat } }>(
      '/disks/import',
      {
        schema: {
          summary: 'Import an image (qcow2, raw, VMDK, VHD, VHDX) into the pool; returns the job',
          body: {
            type: 'object',
            required: ['name', 'source'],
            additionalProperties: false,
            properties: {
              name: { type: 'string' },
              source: { type: 'string' },
              format: { type: 'string' },
              targetFormat: { type: 'string' },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.status(202).send(await disks.startImport(req.body)),
    );

    app.delete<{ Params: { name: string } }>(
      '/disks/:name',
      {
        schema: {
          summary: 'Delete a disk (its file, for images)',
          params: nameParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await disks.delete(req.params.name);
        return reply.status(204).send();
      },
    );
  };
}
