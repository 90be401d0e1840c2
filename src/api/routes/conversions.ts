import type { FastifyPluginAsync } from 'fastify';
import type { ConversionService } from '../../convert/conversion-service.js';
import type { CheckInput, ConvertInput } from '../../convert/conversion-input.js';
import type { NbdTlsMaterial } from '../../nbd/nbd-tls-creds.js';
import { EXPORT_FORMATS, type ExportService, type VmExportFormat } from '../../convert/export-service.js';
import { inspectSource } from '../../convert/image-conversion.js';
import { errorResponses } from '../schemas.js';
import { MamoriError } from '../../core/mamori-error.js';
import type { HostPathPolicy } from '../../host/host-path-policy.js';

const free = { type: 'object', additionalProperties: true } as const;
const source = { type: 'string', minLength: 2, maxLength: 4096, pattern: '^/' } as const;
/**
 * A path on the site's host, or an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://: any
 * NBD server, or a P2V agent with agentKey). The pattern only routes; src/nbd/nbd-uri.ts
 * parses strictly and answers NBD_URI_INVALID with the reason.
 */
const convertSource = { type: 'string', minLength: 2, maxLength: 8192, pattern: '^(/|[Nn][Bb][Dd])' } as const;
const pem = { type: 'string', minLength: 1, maxLength: 65536 } as const;
/** TLS material for nbds:// sources, as PEM: the CLI reads it from --tls-creds DIR, so no key file is named on the site's host. */
const tls = {
  type: 'object',
  required: ['ca'],
  additionalProperties: false,
  properties: { ca: pem, cert: pem, key: pem },
} as const;
const machineType = { type: 'string', minLength: 1, maxLength: 64 } as const;
const agentKey = { type: 'string', minLength: 16, maxLength: 256 } as const;

/** P2V/V2V at this site: inspect a disk or image on the site's host, convert it into a VM, and export VMs back out. */
export function conversionRoutes(deps: {
  conversions: ConversionService;
  exports: ExportService;
  disks: { hostPaths: HostPathPolicy };
}): FastifyPluginAsync {
  return async (app) => {
    app.post<{ Body: { source: string; tls?: NbdTlsMaterial } }>(
      '/inspections',
      {
        schema: {
          summary:
            "Inspect a block device or image on the site's host, or a disk an NBD server serves: partition table, filesystems, firmware, boot loader, guest OS",
          body: {
            type: 'object',
            required: ['source'],
            additionalProperties: false,
            properties: { source: convertSource, tls },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => {
        if (req.body.source.startsWith('/')) {
          if (req.body.tls !== undefined)
            throw new MamoriError('INVALID_INPUT', 'tls is for nbds:// and nbds+unix:// sources only');
          return inspectSource((await deps.disks.hostPaths.image(req.body.source)).path);
        }
        return (
          await deps.conversions.check({ source: req.body.source, ...(req.body.tls ? { tls: req.body.tls } : {}) })
        ).inspection;
      },
    );
    app.post<{ Body: CheckInput }>(
      '/conversions/check',
      {
        schema: {
          summary:
            'The compatibility report of a conversion (blockers and degradations), before anything is copied or made',
          body: {
            type: 'object',
            required: ['source'],
            additionalProperties: false,
            properties: {
              source: convertSource,
              name: { type: 'string' },
              memoryMiB: { type: 'integer' },
              vcpus: { type: 'integer' },
              agentKey,
              machineType,
              tls,
            },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.conversions.check(req.body),
    );
    app.post<{ Body: ConvertInput }>(
      '/conversions',
      {
        schema: {
          summary:
            'Convert a physical disk or a VMware/Hyper-V image into a VM that follows its inspection; returns the job',
          body: {
            type: 'object',
            required: ['source', 'name'],
            additionalProperties: false,
            properties: {
              source: convertSource,
              name: { type: 'string' },
              format: { type: 'string', enum: ['qcow2', 'raw'] },
              start: { type: 'boolean' },
              memoryMiB: { type: 'integer' },
              vcpus: { type: 'integer' },
              agentKey,
              machineType,
              tls,
              convergeBelowMiB: { type: 'integer', minimum: 0, maximum: 1048576 },
            },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(202).send(await deps.conversions.start(req.body)),
    );
    app.post<{ Params: { name: string }; Body: { format: VmExportFormat; directory?: string } }>(
      '/vms/:name/export',
      {
        schema: {
          summary:
            'Export a stopped VM for VMware or Hyper-V: VMDK or VHDX disks, or an OVA (OVF descriptor, manifest, streamOptimized VMDKs); returns the job',
          params: {
            type: 'object',
            required: ['name'],
            properties: { name: { type: 'string', minLength: 1, maxLength: 64 } },
          },
          body: {
            type: 'object',
            required: ['format'],
            additionalProperties: false,
            properties: { format: { type: 'string', enum: [...EXPORT_FORMATS] }, directory: source },
          },
          response: { 202: { $ref: 'Job#' }, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send(
          await deps.exports.start({
            vm: req.params.name,
            format: req.body.format,
            ...(req.body.directory ? { directory: req.body.directory } : {}),
          }),
        ),
    );
  };
}
