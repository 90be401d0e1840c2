/**
 * Who may call what: every route of the API, in one table. buildApp refuses to register a
 * route that is not here (so a new route cannot ship without declared roles), the auth hook
 * enforces it before any handler runs, and the OpenAPI document shows it (`x-roles`).
 *
 * - admin: everything an operator does, plus host paths (RDM devices, imports, inspections,
 *   conversions, exports, P2V targets, benchmarks), site pairing, storage arrays, networks and
 *   mappings, alerts, tokens and the audit log.
 * - operator: runs the site: VMs, pool disks, snapshots, replication, plans, migrations,
 *   protection groups, desktop pools. Never a host path, never a credential.
 * - viewer: reads (GET) what operators see.
 * - site: a paired site's token; exactly the site-to-site calls its peer makes, nothing an
 *   operator does. Admin tokens do not act as a site: those routes take the calling site's
 *   identity from its token.
 */
import type { Role } from '../core/roles.js';

export interface RouteAccess {
  /** Roles that may call the route; 'public' needs no token (it proves itself, or reveals nothing). */
  roles: readonly Role[] | 'public';
  /**
   * Body fields only an admin may set, even where operators may call the route: each
   * names a host path (an operator may make a pool disk, not map /dev/sda).
   */
  adminOnlyFields?: readonly string[];
}

const READ: readonly Role[] = ['admin', 'operator', 'viewer'];
const OPERATE: readonly Role[] = ['admin', 'operator'];
const ADMIN: readonly Role[] = ['admin'];
const SITE: readonly Role[] = ['site'];
const PUBLIC = 'public' as const;

const r = (roles: readonly Role[] | 'public', adminOnlyFields?: readonly string[]): RouteAccess =>
  adminOnlyFields ? { roles, adminOnlyFields } : { roles };

/** Keyed "METHOD /fastify/:pattern". HEAD routes fastify adds for GET take the GET entry. */
export const ROUTE_ROLES: Readonly<Record<string, RouteAccess>> = {
  // Public: liveness, the API's own description, the CA a peer pins, the pairing handshake
  // (authenticated by its proof), and the console's static files (they hold no data).
  'GET /health': r(PUBLIC),
  'GET /openapi.json': r(PUBLIC),
  'GET /site/ca': r(PUBLIC),
  'POST /site/pairing': r(PUBLIC),
  'GET /': r(PUBLIC),
  'GET /ui': r(PUBLIC),
  'GET /ui/*': r(PUBLIC),
  'GET /favicon.ico': r(PUBLIC),

  'GET /host/info': r(READ),
  'GET /metrics': r(READ),
  'GET /events': r(READ),
  'GET /jobs': r(READ),
  'GET /jobs/:id': r(READ),
  'GET /jobs/:id/events': r(READ),
  'GET /job-kinds': r(READ),

  // Tokens and the audit log: who may do what, and what they did.
  'GET /tokens': r(ADMIN),
  'POST /tokens': r(ADMIN),
  'DELETE /tokens/:id': r(ADMIN),
  'GET /audit': r(ADMIN),
  'GET /audit/verify': r(ADMIN),
  // Who the caller is: the console shows only what its role may do.
  'GET /me': r(['admin', 'operator', 'viewer', 'site']),

  'GET /vms': r(READ),
  'POST /vms': r(OPERATE),
  'GET /vms/:name': r(READ),
  'DELETE /vms/:name': r(OPERATE),
  'POST /vms/:name/start': r(OPERATE),
  'POST /vms/:name/stop': r(OPERATE),
  'POST /vms/:name/kill': r(OPERATE),
  'POST /vms/:name/pause': r(OPERATE),
  'POST /vms/:name/resume': r(OPERATE),
  'GET /vms/:name/console': r(READ),
  'GET /vms/:name/snapshots': r(READ),
  'POST /vms/:name/snapshots': r(OPERATE),
  'DELETE /vms/:name/snapshots/:snapshot': r(OPERATE),
  // The export writes files on the host (a directory of the caller's choosing, or the site's exports folder).
  'POST /vms/:name/export': r(ADMIN),

  'GET /disks': r(READ),
  'GET /disks/:name': r(READ),
  'POST /disks': r(OPERATE, ['rdm', 'path']),
  'POST /disks/import': r(ADMIN),
  'DELETE /disks/:name': r(OPERATE),

  // Host paths: inspections and conversions read devices and image files of the host.
  'POST /inspections': r(ADMIN),
  'POST /conversions': r(ADMIN),
  // Admin only, like /conversions: it inspects a host path, or makes the site connect to the
  // NBD server a URI names (the site's own network position: see docs/security.md).
  'POST /conversions/check': r(ADMIN),
  'POST /bench/storage': r(ADMIN),

  'GET /networks': r(READ),
  'POST /networks': r(ADMIN),
  'DELETE /networks/:name': r(ADMIN),
  'GET /mappings': r(READ),
  'PUT /mappings': r(ADMIN),
  'DELETE /mappings/:peer/:kind/:source': r(ADMIN),

  'GET /arrays': r(READ),
  'POST /arrays': r(ADMIN),
  'DELETE /arrays/:name': r(ADMIN),
  'GET /arrays/:name/devices': r(READ),
  'GET /compat/check': r(READ),

  'GET /alerts': r(READ),
  'PUT /alerts/webhook': r(ADMIN),
  'DELETE /alerts/webhook': r(ADMIN),
  'POST /alerts/webhook/test': r(ADMIN),

  // Pairing as the operator sees it.
  'GET /sites': r(READ),
  'POST /sites': r(ADMIN),
  'GET /sites/:name': r(READ),
  'GET /sites/:name/ping': r(READ),
  'DELETE /sites/:name': r(ADMIN),
  // A link's bandwidth and cycles in flight shape every VM's protection to that site: admin only.
  'PUT /sites/:name/link': r(ADMIN),
  // Pairing as the peer sees it.
  'GET /site/pairing': r(SITE),
  'DELETE /site/pairing': r(SITE),

  'GET /replication': r(READ),
  'POST /vms/:name/replication': r(OPERATE),
  'GET /vms/:name/replication': r(READ),
  'DELETE /vms/:name/replication': r(OPERATE),
  'POST /vms/:name/replication/pause': r(OPERATE),
  'POST /vms/:name/replication/resume': r(OPERATE),
  'POST /vms/:name/replication/sync': r(OPERATE),
  'POST /vms/:name/replication/verify': r(OPERATE),
  'GET /vms/:name/replication/points': r(READ),
  'GET /vms/:name/replication/checkpoints': r(READ),

  // The recovery side of replication, called by the protected site.
  'POST /replicas': r(SITE),
  'GET /replicas/:id': r(SITE),
  'POST /replicas/:id/cycles': r(SITE),
  'POST /replicas/:id/cycles/abort': r(SITE),
  'POST /replicas/:id/cycles/:cycleId/checksums': r(SITE),
  'POST /replicas/:id/cycles/:cycleId/commit': r(SITE),
  'GET /replicas/:id/cycles/:cycleId/disks/:disk/stream': r(SITE),
  'POST /replicas/:id/verify': r(SITE),
  'POST /replicas/:id/journal': r(SITE),
  'GET /replicas/:id/checkpoints': r(SITE),
  'GET /replicas/:id/journal/disks/:disk/stream': r(SITE),
  'GET /replicas/:id/seed-delta': r(SITE),
  'DELETE /replicas/:id': r(SITE),
  // The same replicas as the recovery site's operator sees them. Deleting one is an operator's,
  // like 'replicate disable' and 'vm delete': no host path, and it is refused while anything
  // (a VM, another replica's seed, the source's replication) still needs it.
  'GET /site-replicas': r(READ),
  'GET /site-replicas/:id': r(READ),
  'DELETE /site-replicas/:id': r(OPERATE),

  'GET /protection-groups': r(READ),
  'POST /protection-groups': r(OPERATE),
  'GET /protection-groups/:name': r(READ),
  'DELETE /protection-groups/:name': r(OPERATE),
  'POST /protection-groups/:name/sync': r(OPERATE),
  'POST /protection-groups/:name/vms': r(OPERATE),
  'DELETE /protection-groups/:name/vms/:vm': r(OPERATE),

  // The protected site's side of a peer's plan runs, failovers and failbacks.
  'GET /protection/inventory': r(SITE),
  'POST /protection/vms/:vm/prepare-failover': r(SITE),
  'POST /protection/vms/:vm/replicate-back': r(SITE),
  'POST /protection/vms/:vm/seed-replica': r(SITE),
  'POST /protection/vms/:vm/superseded': r(SITE),
  'POST /protection/array-groups/:name/prepare-failover': r(SITE),
  'POST /protection/array-groups/:name/prepare-reverse': r(SITE),
  'GET /recovery/array-failovers': r(SITE),
  'POST /recovery/vm-failover': r(SITE),
  'GET /recovery/vm-failover/:id': r(SITE),
  'POST /recovery/vms/:vm/promote': r(SITE),
  'POST /recovery/vms/:vm/recover': r(SITE),

  'GET /plans': r(READ),
  'POST /plans': r(OPERATE),
  'GET /plans/:name': r(READ),
  'DELETE /plans/:name': r(OPERATE),
  'POST /plans/:name/runs': r(OPERATE),
  'GET /plan-runs': r(READ),
  'GET /plan-runs/:id': r(READ),
  'POST /plan-runs/:id/resume': r(OPERATE),
  'POST /plan-runs/:id/continue': r(OPERATE),
  'POST /plan-runs/:id/cancel': r(OPERATE),
  'POST /vms/:name/failover': r(OPERATE),

  'POST /vms/:name/migrate': r(OPERATE),
  'POST /vms/:name/migrate/cancel': r(OPERATE),
  // The destination's side of a live migration, called by the source site.
  'POST /migrations/incoming': r(SITE),
  'GET /migrations/outgoing/:vmId': r(SITE),
  'POST /migrations/:vmId/activate': r(SITE),
  'POST /migrations/:vmId/abort': r(SITE),
  'POST /migrations/:vmId/keepalive': r(SITE),

  'GET /pools': r(READ),
  'POST /pools': r(OPERATE),
  'GET /pools/:name': r(READ),
  'DELETE /pools/:name': r(OPERATE),
  'POST /pools/:name/assign': r(OPERATE),
  'POST /pools/:name/unassign': r(OPERATE),
  'POST /pools/:name/session-start': r(OPERATE),
  'POST /pools/:name/session-end': r(OPERATE),
  'POST /pools/:name/move-persistent': r(OPERATE),
  'POST /pools/:name/rebalance': r(OPERATE),
  'POST /pools/:name/recompose': r(OPERATE),
  'POST /pools/:name/refresh': r(OPERATE),
  'POST /pools/:name/resize': r(OPERATE),
  'POST /pools/:name/resume': r(OPERATE),
};

/** The declaration of a route as fastify names it; HEAD falls back to its GET. */
export function routeAccess(method: string, url: string): RouteAccess | undefined {
  return ROUTE_ROLES[`${method} ${url}`] ?? (method === 'HEAD' ? ROUTE_ROLES[`GET ${url}`] : undefined);
}
