import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { installErrorReplies } from './error-replies.js';
import swagger from '@fastify/swagger';
import type { Logger } from '../core/logger.js';
import type { ReplicaService } from '../replication/replica-service.js';
import type { ReplicationService } from '../replication/replication-service.js';
import { replicationRoutes } from './routes/replication.js';
import { replicaRoutes } from './routes/replicas.js';
import type { TokenRepo } from '../store/repos/token-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { DiskService } from '../disks/disk-service.js';
import type { JobJournal } from '../jobs/job-journal.js';
import type { SitePairing } from '../sites/site-pairing.js';
import type { SitePeers } from '../sites/site-peers.js';
import { diskSchema, errorSchema, jobSchema, peerSchema, vmSchema } from './schemas.js';
import { vmRoutes } from './routes/vms.js';
import { diskRoutes } from './routes/disks.js';
import { hostRoutes, type HostInfoSource } from './routes/host.js';
import { jobRoutes } from './routes/jobs.js';
import { siteRoutes } from './routes/sites.js';
import { eventRoutes } from './routes/events.js';
import { protectionGroupRoutes } from './routes/protection-groups.js';
import { desktopPoolRoutes } from './routes/desktop-pools.js';
import { storageArrayRoutes } from './routes/storage-arrays.js';
import { storageBenchRoutes } from './routes/storage-bench.js';
import type { StorageBench } from '../disks/storage-bench.js';
import type { StorageArrays } from '../adapters/storage-arrays.js';
import type { PoolService } from '../pools/pool-service.js';
import type { ProtectionGroups } from '../plans/protection-groups.js';
import type { IncidentLog } from '../events/incident-log.js';
import { networkRoutes } from './routes/networks.js';
import { protectionRoutes } from './routes/protection.js';
import { planRoutes } from './routes/plans.js';
import { metricsRoutes } from './routes/metrics.js';
import { alertRoutes } from './routes/alerts.js';
import type { SiteMetrics } from '../metrics/site-metrics.js';
import type { AlertNotifier } from '../events/alert-notifier.js';
import { jobEventRoutes } from './routes/job-events.js';
import { PLAN_RUN_JOB } from '../plans/run-journal.js';
import { summarizeRun } from '../plans/plan-report.js';
import { consoleRoutes } from './routes/console.js';
import { installAccessControl } from './access-control.js';
import { installSecurityHeaders } from './security-headers.js';
import { tokenRoutes } from './routes/tokens.js';
import { TokenService } from '../auth/token-service.js';
import type { SiteNetworks } from '../networks/site-networks.js';
import type { InventoryMappings } from '../plans/inventory-mappings.js';
import type { ProtectedSite } from '../site-roles/protected-site.js';
import type { ArrayGroups } from '../array-groups/array-groups.js';
import type { PlanService } from '../plans/plan-service.js';
import type { PlanRunner } from '../plans/plan-runner.js';
import type { RunJournal } from '../plans/run-journal.js';
import type { PeerRecovery } from '../site-roles/peer-recovery.js';
import type { LiveMigrations } from '../migration/live-migration.js';
import type { IncomingMigrations } from '../migration/incoming-migration.js';
import { migrationRoutes } from './routes/migrations.js';
import { conversionRoutes } from './routes/conversions.js';
import type { ConversionService } from '../convert/conversion-service.js';
import type { ExportService } from '../convert/export-service.js';
import type { VmFailover } from '../site-roles/vm-failover.js';
import './request-caller.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { AuthFailureLimiter } from './auth-failure-limiter.js';
import { registerAuditHooks } from './audit-hooks.js';
import { auditRoutes } from './routes/audit.js';
import { cycleStreamRoutes, installCycleStreams } from './cycle-streams.js';
import { journalStreamRoutes } from './journal-streams.js';

export interface AppDeps {
  siteName: string;
  tokens: TokenRepo;
  vms: VmService;
  disks: DiskService;
  jobs: JobJournal;
  host: HostInfoSource;
  pairing: SitePairing;
  peers: SitePeers;
  replicas: ReplicaService;
  replication: ReplicationService;
  incidents: IncidentLog;
  groups: ProtectionGroups;
  networks: SiteNetworks;
  mappings: InventoryMappings;
  protectedSite: ProtectedSite;
  arrayGroups: ArrayGroups;
  plans: PlanService;
  runner: PlanRunner;
  runs: RunJournal;
  peerRecovery: PeerRecovery;
  migrations: LiveMigrations;
  incoming: IncomingMigrations;
  failover: VmFailover;
  conversions: ConversionService;
  exports: ExportService;
  pools: PoolService;
  storageArrays: StorageArrays;
  storageBench: StorageBench;
  /** GET /metrics and the API request histogram; absent: no /metrics route. */
  metrics?: SiteMetrics;
  /** The alert webhook (/alerts routes); absent: no /alerts routes. */
  alerts?: AlertNotifier;
  logger: Logger;
  /** The audit log of state-changing and refused calls (src/api/audit-hooks.ts records them). */
  audit: AuditLog;
  /** Refuses an address that sent too many wrong tokens (TOO_MANY_AUTH_FAILURES). */
  authFailures: AuthFailureLimiter;
  /** Serve HTTPS with this key and certificate (PEM); plain HTTP without (--insecure-http). */
  https?: { key: string; cert: string };
}

/**
 * Builds the REST API without listening, so tests drive it with inject() and main.ts
 * decides where it listens. Requests become typed service calls; nothing here touches
 * QEMU directly.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const options = {
    logger: deps.logger as FastifyBaseLogger,
    disableRequestLogging: true,
    genReqId: () => `req-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false, allowUnionTypes: true } },
  };
  // Fastify's types follow the server kind; the rest of the code only needs the common surface.
  const app = (deps.https
    ? Fastify({ ...options, https: deps.https })
    : Fastify(options)) as unknown as FastifyInstance;
  // Before swagger and every route: it refuses routes without declared roles and tags the rest.
  installAccessControl(app, { tokens: deps.tokens, authFailures: deps.authFailures });
  installSecurityHeaders(app);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'mamori site API', version: '0.1.0', description: 'One mamori site: VMs, disks, host, jobs.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    refResolver: {
      buildLocalReference: (json, _base, _frag, i) => (typeof json['$id'] === 'string' ? json['$id'] : `def-${i}`),
    },
  });
  for (const s of [errorSchema, vmSchema, diskSchema, jobSchema, peerSchema]) app.addSchema(s);

  registerAuditHooks(app, { audit: deps.audit }); // before every route and hook below: one entry per call

  const metrics = deps.metrics;
  if (metrics) {
    // The route's pattern (/vms/:name), never the URL: one series per route, not per VM or id.
    app.addHook('onResponse', async (req, reply) => {
      const route = req.routeOptions.url;
      if (route === '/metrics') return;
      metrics.requestEnded({
        method: req.method,
        route: route ?? '(no route)',
        statusCode: reply.statusCode,
        durationMs: reply.elapsedTime,
      });
    });
  }

  installErrorReplies(app);

  // time: the server's clock (ms since the epoch), for peers' clock offset estimates.
  app.get('/health', { schema: { hide: true } }, async () => ({ ok: true, site: deps.siteName, time: Date.now() }));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await app.register(hostRoutes(deps));
  await app.register(vmRoutes(deps));
  await app.register(diskRoutes(deps));
  await app.register(jobRoutes(deps));
  await app.register(siteRoutes(deps));
  await app.register(replicationRoutes(deps));
  await app.register(replicaRoutes(deps));
  await app.register(cycleStreamRoutes());
  await app.register(journalStreamRoutes());
  installCycleStreams(app, { tokens: deps.tokens, authFailures: deps.authFailures, replicas: deps.replicas });
  await app.register(eventRoutes(deps));
  await app.register(protectionGroupRoutes(deps));
  await app.register(networkRoutes(deps));
  await app.register(protectionRoutes(deps));
  await app.register(planRoutes(deps));
  await app.register(
    jobEventRoutes({
      jobs: deps.jobs,
      // The console's run page draws the run itself: its job's events carry it.
      details: {
        [PLAN_RUN_JOB.kind]: async (job) => {
          const run = await deps.runner.get(job.id);
          return { run: { ...run, summary: summarizeRun(run) } };
        },
      },
    }),
  );
  await app.register(migrationRoutes(deps));
  await app.register(conversionRoutes(deps));
  await app.register(desktopPoolRoutes(deps));
  await app.register(storageArrayRoutes(deps));
  await app.register(storageBenchRoutes(deps));
  await app.register(tokenRoutes({ tokenService: new TokenService(deps.tokens) }));
  if (deps.metrics) await app.register(metricsRoutes({ metrics: deps.metrics }));
  if (deps.alerts) await app.register(alertRoutes({ incidents: deps.incidents, alerts: deps.alerts }));
  await app.register(auditRoutes(deps));
  await app.register(consoleRoutes());
  return app;
}
