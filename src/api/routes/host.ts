import type { FastifyPluginAsync } from 'fastify';
import { errorResponses } from '../schemas.js';
import type { HostInfoView } from '../../host/host-info-view.js';

export type { HostInfoView } from '../../host/host-info-view.js';

export interface HostInfoSource {
  info(): Promise<HostInfoView>;
}

export function hostRoutes(deps: { host: HostInfoSource }): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/host/info',
      {
        schema: {
          summary: 'Accelerator in use and why, QEMU version, machine types',
          response: {
            200: {
              type: 'object',
              required: ['site', 'accelerator', 'qemu', 'machineTypes'],
              properties: {
                site: { type: 'string' },
                accelerator: {
                  type: 'object',
                  properties: {
                    accel: { type: 'string', enum: ['kvm', 'tcg'] },
                    reason: { type: 'string' },
                    probeMs: { type: 'number' },
                  },
                },
                qemu: { type: 'object', properties: { version: { type: 'string' }, binary: { type: 'string' } } },
                machineTypes: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: { name: { type: 'string' }, alias: { type: 'string' }, isDefault: { type: 'boolean' } },
                  },
                },
                ovmf: { type: ['object', 'null'], properties: { code: { type: 'string' }, vars: { type: 'string' } } },
                testGuest: { type: 'object', properties: { available: { type: 'boolean' }, dir: { type: 'string' } } },
              },
            },
            ...errorResponses,
          },
        },
      },
      async () => deps.host.info(),
    );
  };
}
