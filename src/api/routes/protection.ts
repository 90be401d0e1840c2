import type { ContinuousSettings } from '../../store/records/replica-record.js';
import type { FastifyPluginAsync } from 'fastify';
import type { ProtectedSite, ProtectedVm } from '../../site-roles/protected-site.js';
import type { PeerRecovery } from '../../site-roles/peer-recovery.js';
import type { ArrayGroups } from '../../array-groups/array-groups.js';
import { callerOf } from '../request-caller.js';
import { errorResponses } from '../schemas.js';
import { MamoriError } from '../../core/mamori-error.js';

const free = { type: 'object', additionalProperties: true } as const;
const vmParam = {
  type: 'object',
  required: ['vm'],
  properties: { vm: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } },
} as const;

/**
 * The protected side of recovery plans, called by the recovery site with its site token:
 * the caller is named by its token, and sees only what is protected for it.
 */
export function protectionRoutes(deps: {
  protectedSite: ProtectedSite;
  peerRecovery: PeerRecovery;
  arrayGroups: ArrayGroups;
}): FastifyPluginAsync {
  const peerName = (req: Parameters<typeof callerOf>[0]): string => callerOf(req).name.replace(/^site:/, '');
  return async (app) => {
    app.get(
      '/protection/inventory',
      {
        schema: {
          summary: 'Protection groups and VMs replicated to the calling site',
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.protectedSite.inventory(peerName(req)),
    );
    app.post<{ Params: { vm: string }; Body: { shutdownTimeoutSec: number } }>(
      '/protection/vms/:vm/prepare-failover',
      {
        schema: {
          summary: 'Planned migration: shut the VM down (forced off after the timeout) and run a final sync',
          params: vmParam,
          body: {
            type: 'object',
            required: ['shutdownTimeoutSec'],
            additionalProperties: false,
            properties: { shutdownTimeoutSec: { type: 'integer', minimum: 1, maximum: 86400 } },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.protectedSite.prepareFailover(peerName(req), req.params.vm, req.body.shutdownTimeoutSec),
    );
    app.post<{ Params: { vm: string }; Body: { generation: number; reason: string } }>(
      '/protection/vms/:vm/superseded',
      {
        schema: {
          summary: "The caller promoted this VM's replica: keep the VM here off (split-brain safety)",
          params: vmParam,
          body: {
            type: 'object',
            required: ['generation', 'reason'],
            additionalProperties: false,
            properties: { generation: { type: 'integer', minimum: 1 }, reason: { type: 'string', maxLength: 500 } },
          },
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await deps.protectedSite.markSuperseded(peerName(req), req.params.vm, req.body.generation, req.body.reason);
        return reply.code(204).send();
      },
    );
    // Array-based groups: the protected array's side of a planned migration and of reprotect.
    const groupParam = {
      type: 'object',
      required: ['name'],
      properties: { name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' } },
    } as const;
    app.post<{ Params: { name: string } }>(
      '/protection/array-groups/:name/prepare-failover',
      {
        schema: {
          summary:
            'Planned migration of an array-based group: its devices made read-only and a last point sent (its VMs must be off)',
          params: groupParam,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.arrayGroups.prepareFailover(peerName(req), req.params.name),
    );
    app.post<{ Params: { name: string } }>(
      '/protection/array-groups/:name/prepare-reverse',
      {
        schema: {
          summary:
            'Reprotect of an array-based group the caller failed over: its devices here become targets at the newest common point; its superseded VMs here are unregistered',
          params: groupParam,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.arrayGroups.prepareReverse(peerName(req), req.params.name),
    );
    app.get(
      '/recovery/array-failovers',
      {
        schema: {
          summary:
            "The caller's VMs this site recovered through array failovers (planned or disaster), and when: the caller keeps those copies off",
          response: { 200: { type: 'array', items: free }, ...errorResponses },
        },
      },
      async (req) => deps.arrayGroups.failoversFor(peerName(req)),
    );
    // Reprotect and failback: the caller runs the plan; these are its steps at this site.
    app.post<{ Params: { vm: string } }>(
      '/protection/vms/:vm/seed-replica',
      {
        schema: {
          summary: "Turn a VM superseded by the caller's failover into the seed of a replica of the caller's copy",
          params: vmParam,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.peerRecovery.seed(peerName(req), req.params.vm),
    );
    app.post<{
      Params: { vm: string };
      Body: { rpoSeconds: number; keepPoints: number; continuous?: ContinuousSettings; group?: string };
    }>(
      '/protection/vms/:vm/replicate-back',
      {
        schema: {
          summary:
            'Replicate a VM of this site to the caller, whose replica is seeded; sync once and protect it in a group',
          params: vmParam,
          body: {
            type: 'object',
            required: ['rpoSeconds', 'keepPoints'],
            additionalProperties: false,
            properties: {
              rpoSeconds: { type: 'integer', minimum: 1 },
              keepPoints: { type: 'integer', minimum: 1, maximum: 1000 },
              continuous: {
                type: 'object',
                description: "the protected VM's continuous settings: it replicates back continuously, with them",
                required: ['checkpointMs', 'journalMs'],
                additionalProperties: false,
                properties: {
                  checkpointMs: { type: 'integer', minimum: 1 },
                  journalMs: { type: 'integer', minimum: 1 },
                  appCheckpointMs: { type: ['integer', 'null'], minimum: 1 },
                },
              },
              group: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
            },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.peerRecovery.replicateBack(peerName(req), req.params.vm, req.body),
    );
    app.post<{ Params: { vm: string } }>(
      '/recovery/vms/:vm/promote',
      {
        schema: {
          summary: "Failback: promote this site's replica of a VM of the caller",
          params: vmParam,
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => deps.peerRecovery.promote(peerName(req), req.params.vm),
    );
    app.post<{
      Params: { vm: string };
      Body: { runId: string; runStartedAt: string; vm: ProtectedVm; powerOn: boolean; waitHeartbeatSec: number };
    }>(
      '/recovery/vms/:vm/recover',
      {
        schema: {
          summary:
            'Failback: make the VM here from the newest point of its promoted replica, power it on and wait for it',
          params: vmParam,
          body: {
            type: 'object',
            required: ['runId', 'runStartedAt', 'vm', 'powerOn', 'waitHeartbeatSec'],
            additionalProperties: false,
            properties: {
              runId: { type: 'string', pattern: '^run-[a-z0-9]{1,40}$' },
              runStartedAt: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' },
              vm: free,
              powerOn: { type: 'boolean' },
              waitHeartbeatSec: { type: 'integer', minimum: 0, maximum: 86400 },
            },
          },
          response: { 200: free, ...errorResponses },
        },
      },
      async (req) => {
        if (req.body.vm.id !== req.params.vm)
          throw new MamoriError('INVALID_INPUT', 'the VM in the body is not the VM of the path');
        return deps.peerRecovery.recover(peerName(req), req.body);
      },
    );
  };
}
