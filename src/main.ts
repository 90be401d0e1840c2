import { mkdir, writeFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './api/build-app.js';
import { createLogger, type Logger } from './core/logger.js';
import { SitePaths } from './core/site-paths.js';
import { assertValidName } from './core/names.js';
import { openStore } from './store/open-store.js';
import { VmRepo } from './store/repos/vm-repo.js';
import { DiskRepo } from './store/repos/disk-repo.js';
import { RecoveredVmRepo } from './store/repos/recovered-vm-repo.js';
import { InstantRecoveries } from './plans/instant-recoveries.js';
import { JournalSpaceWatch } from './replication/journal-space-watch.js';
import { JobJournal } from './jobs/job-journal.js';
import { DiskService } from './disks/disk-service.js';
import { VmService } from './vms/vm-service.js';
import { VmSupervisor } from './vms/vm-supervisor.js';
import { HostService } from './host/host-service.js';
import { PeerRepo } from './store/repos/peer-repo.js';
import { ensureSiteTls, serverNamesFor, type SiteTls } from './sites/site-tls.js';
import { SitePairing } from './sites/site-pairing.js';
import { SitePeers } from './sites/site-peers.js';
import { ReplicaService } from './replication/replica-service.js';
import { ReplicationService } from './replication/replication-service.js';
import { IncidentLog } from './events/incident-log.js';
import { AlertNotifier } from './events/alert-notifier.js';
import { PeerWatch } from './sites/peer-watch.js';
import { wireCompressionMode } from './sites/compressed-stream.js';
import { SiteMetrics } from './metrics/site-metrics.js';
import { siteMetricSources } from './metrics/metric-sources.js';
import { ProtectionGroups } from './plans/protection-groups.js';
import { SiteNetworks } from './networks/site-networks.js';
import { InventoryMappings } from './plans/inventory-mappings.js';
import { ProtectedSite } from './site-roles/protected-site.js';
import { openSecrets } from './site-secrets.js';
import { cdpBacklogFromEnv, peerCheckFromEnv } from './serve-options.js';
import { ArrayGroups } from './array-groups/array-groups.js';
import { ArrayRunActions } from './array-groups/array-run-actions.js';
import { PlanService } from './plans/plan-service.js';
import { PlanRunner } from './plans/plan-runner.js';
import { RunJournal } from './plans/run-journal.js';
import { VmRecovery } from './plans/vm-recovery.js';
import { ReplicaSeeding } from './site-roles/replica-seeding.js';
import { PeerRecovery } from './site-roles/peer-recovery.js';
import { RunStepActions } from './plans/run-step-actions.js';
import { IncomingMigrations } from './migration/incoming-migration.js';
import { LiveMigrations } from './migration/live-migration.js';
import { peerMigrationSource } from './migration/migration-source.js';
import type { ReverseReplication } from './migration/reverse-replication.js';
import type { VmStartGate } from './vms/vm-start-gate.js';
import type { SupersededHandler } from './replication/superseded-handler.js';
import type { CycleEndListener } from './replication/cycle-end-listener.js';
import { VmFailover } from './site-roles/vm-failover.js';
import { ConversionService } from './convert/conversion-service.js';
import { ExportService } from './convert/export-service.js';
import { PoolService } from './pools/pool-service.js';
import { poolMasterGuard } from './pools/pool-guards.js';
import { DesktopPoolRepo } from './store/repos/desktop-pool-repo.js';
import type { PowerOffListener } from './vms/power-off-listener.js';
import { StorageArrays } from './adapters/storage-arrays.js';
import { StorageBench } from './disks/storage-bench.js';
import { HostPathPolicy, type HostPathAllowList } from './host/host-path-policy.js';
import { assertPrivateDataDir } from './core/data-dir-modes.js';
import { AuditLog } from './audit/audit-log.js';
import { AuditRepo } from './store/repos/audit-repo.js';
import { AuthFailureLimiter } from './api/auth-failure-limiter.js';
import { Port } from './core/port.js';

export interface SiteOptions {
  dataDir: string;
  name: string;
  guestDir?: string;
  logger?: Logger;
  /** Names and addresses the server certificate must cover besides loopback (the listen host). */
  serverNames?: string[];
  /** Serve plain HTTP (local development only); the CA and certificates are made all the same. */
  insecureHttp?: boolean;
  /** Host paths API callers may name (--allow-device, --allow-import); default: block devices under /dev, no files. */
  hostPaths?: HostPathAllowList;
  /** How often paired sites' health is checked for the site.peer-unreachable alert (default MAMORI_PEER_CHECK_MS, else 30 s). */
  peerCheckIntervalMs?: number;
  /** The site's database on PostgreSQL (serve --db, MAMORI_DB); default: SQLite in the data folder. */
  databaseUrl?: string;
}

export interface Site {
  app: FastifyInstance;
  paths: SitePaths;
  host: HostService;
  /** The site's CA and certificates (DATA/tls/); replication builds QEMU TLS credentials from them. */
  tls: SiteTls;
  /** Paired sites and pinned clients to call them. */
  peers: SitePeers;
  /** Set only at first start: the admin token in clear, also written to DATA/admin-token. */
  createdAdminToken: string | null;
  listen(host: string, port: number): Promise<string>;
  /** Stops serving; VMs keep running and are re-attached by the next start. */
  close(): Promise<void>;
}

/**
 * The composition root: one site = data folder + database + API + its QEMU processes.
 *
 * Start-up is one sequence, read top to bottom; each step says why it comes where it does:
 *   1. data folder and store  2. secrets and TLS  3. the VM layer  4. re-attach VMs
 *   5. the services above VMs (constructors only; the ports of their cycles bound at its end)
 *   6. recover what the previous server left  7. the API (built, not listening)
 *   then listen(): 8. listen  9. schedulers and watches  10. the URL file.
 * close() undoes it in reverse. Services get what they need at construction: nothing is set
 * on a service after it is built.
 */
export async function openSite(opts: SiteOptions): Promise<Site> {
  assertValidName('site', opts.name);
  const log = opts.logger ?? createLogger({ name: opts.name });
  const paths = new SitePaths(opts.dataDir);

  // 1. The data folder and the store: everything after keeps its state there. Everything this
  // server makes (the database and its -wal/-shm, keys, tokens, VM images made by qemu-img,
  // sockets) is its user's alone; children inherit the mask.
  process.umask(0o077);
  await assertPrivateDataDir(paths.root, paths.secretFiles);
  await mkdir(paths.root, { recursive: true, mode: 0o700 });
  const store = await openStore({ sqliteFile: paths.database, postgresUrl: opts.databaseUrl });

  // 2. Secrets and TLS, before any service: peers, tokens and arrays are sealed with the
  // at-rest key, so a key that opens nothing stops the start here. The site CA and
  // certificates serve the API and the TLS of QEMU's streams (replication, migration).
  const { box, tokens, createdAdminToken } = await openSecrets(store, paths, log).catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  const tls = await ensureSiteTls({
    dir: paths.tlsDir,
    siteName: opts.name,
    serverNames: serverNamesFor(opts.serverNames ?? []),
  });
  if (tls.created.length)
    log.info(
      { created: tls.created, fingerprint: tls.caFingerprint, names: tls.serverNames },
      'site TLS material made',
    );

  // 3. The VM layer: what step 4 needs to find the VMs again. Isolated networks' bridges are
  // restored first (a host reboot removed them), so VMs started from here on find them.
  const host = new HostService({ siteName: opts.name, log, ...(opts.guestDir ? { guestDir: opts.guestDir } : {}) });
  const jobs = new JobJournal(store.handle);
  const hostPaths = new HostPathPolicy({ dataDir: paths.root, ...(opts.hostPaths ? { allow: opts.hostPaths } : {}) });
  const storageArrays = new StorageArrays(store.handle, box);
  const disks = new DiskService({ db: store.handle, paths, jobs, log, hostPaths, arrays: storageArrays });
  const networks = new SiteNetworks({ db: store.handle, log });
  await networks.restore();
  // Four pairs of services need each other. Each cycle is broken by a port made here, before
  // both: the first service gets it at construction, and it is bound to the second at the end
  // of step 5, the one place ports are bound. Used before that, a port throws, but for poweredOff.
  //   startGate:  VmService -> ReplicationService (a start waits for the VM's cycle)
  //   superseded: ReplicationService -> ProtectedSite (a peer failed the VM over)
  //   cycleEnds:  ReplicationService -> SiteMetrics (the metrics read replication's status)
  //   poweredOff: VmSupervisor -> the desktop pools' sessions (a desktop powered off loses its
  //               session and disposable disk, and a spare replaces it). VMs step 4 finds dead
  //               are told to no one: the pools do not exist yet, and step 6 makes up their spares.
  const startGate = new Port<VmStartGate>('the VM start gate (replication)');
  const superseded = new Port<SupersededHandler>('the superseded handler (protected site)');
  const cycleEnds = new Port<CycleEndListener>('the cycle-end listener (metrics)');
  const poweredOff = new Port<PowerOffListener>('the power-off listener (desktop pools)');
  const incidents = new IncidentLog(store.handle);
  const supervisor = new VmSupervisor({
    vms: new VmRepo(store.handle),
    incidents,
    disks: new DiskRepo(store.handle),
    paths,
    host,
    log,
    bridgeOf: (n) => networks.bridgeOf(n),
    powerOff: {
      vmPoweredOff: async (vmId) => {
        if (poweredOff.bound) await poweredOff.target.vmPoweredOff(vmId);
      },
    },
  });
  const vms = new VmService({
    db: store.handle,
    paths,
    disks,
    supervisor,
    resolveMachineType: (t) => host.resolveMachineType(t),
    testGuestAvailable: async () => void (await host.testGuest()),
    networkExists: async (n) => void (await networks.get(n)),
    startGate: { aroundVmStart: (vmId, start) => startGate.target.aroundVmStart(vmId, start) },
    // What may refuse a VM's or a snapshot's deletion: a desktop pool's master and its snapshot.
    deleteGuards: [poolMasterGuard(new DesktopPoolRepo(store.handle))],
  });

  // 4. Re-attach VMs (they outlive the server): what runs is known before any service above
  // reads it, and step 6 undoes a cut replication cycle through its VM's QMP. This comes before
  // step 5, as it always has, so the power-off port (bound there, to the desktop pools) is not
  // told of VMs found dead here.
  await supervisor.reattachAll();

  // 5. The services above VMs: constructors only, no I/O. Those with journalled jobs register
  // their recovery rules with the journal here, before step 6 runs them.
  const peerRepo = new PeerRepo(store.handle, box);
  const pairing = new SitePairing({ siteName: opts.name, tls, peers: peerRepo, tokens, log });
  const peers = new SitePeers({ peers: peerRepo });
  const peerExists = async (n: string): Promise<void> => void (await peers.record(n));
  // The replica's NBD server listens where the API does: the one address paired sites reach (set by listen()).
  let listenHost = '127.0.0.1';
  const replicas = new ReplicaService({
    db: store.handle,
    dataDir: paths.root,
    log,
  });
  // The recovery site's continuous replicas: does each journal's window fit in the room here?
  const journalSpace = new JournalSpaceWatch({
    replicas: () => replicas.list(),
    forecast: (id) => replicas.journalForecast(id),
    incidents,
    log,
  });
  const alerts = new AlertNotifier({ db: store.handle, box, incidents, siteName: opts.name, log });
  const peerWatch = new PeerWatch({
    peers,
    incidents,
    log,
    intervalMs: opts.peerCheckIntervalMs ?? peerCheckFromEnv(),
  });
  const replication = new ReplicationService({
    db: store.handle,
    vms,
    supervisor,
    peers,
    compression: wireCompressionMode(),
    cdpBacklogBytes: cdpBacklogFromEnv(),
    paths,
    jobs,
    incidents,
    log,
    superseded: {
      markSuperseded: (peer, vmId, generation, reason) =>
        superseded.target.markSuperseded(peer, vmId, generation, reason),
    },
    cycleEnds: { cycleEnded: (e) => cycleEnds.target.cycleEnded(e) },
  });
  const incoming = new IncomingMigrations({
    db: store.handle,
    vms,
    supervisor,
    disks,
    paths,
    tls,
    listenHost: () => listenHost,
    log,
    replicas,
    source: peerMigrationSource(peers),
  });
  const arrayGroups = new ArrayGroups({ db: store.handle, arrays: storageArrays, vms, log, jobs, peerExists });
  const protectedSite = new ProtectedSite({
    db: store.handle,
    siteName: opts.name,
    vms,
    replication,
    log,
    arrays: arrayGroups,
  });
  const seeding = new ReplicaSeeding({ db: store.handle, replicas, vms, dataDir: paths.root, log });
  const migrations = new LiveMigrations({
    db: store.handle,
    vms,
    supervisor,
    peers,
    tls,
    paths,
    jobs,
    log,
    replication,
    reverse: reverseReplication({ protectedSite, seeding, peers }),
  });
  const failover = new VmFailover({ db: store.handle, vms, peers, jobs, log });
  const conversions = new ConversionService({
    disks,
    vms,
    jobs,
    log,
    runDir: paths.conversionsDir,
    resolveMachineType: (t) => host.resolveMachineType(t),
  });
  const exports = new ExportService({ disks, vms, jobs, log, defaultDir: paths.exportsDir });
  const pools = new PoolService({ db: store.handle, vms, disks, jobs, paths, log });
  const storageBench = new StorageBench({ vms, disks, jobs, paths, log });
  const metrics = new SiteMetrics(
    siteMetricSources({ db: store.handle, replication, arrayGroups, incidents, replicas }),
  );
  const mappings = new InventoryMappings({ db: store.handle, networks, peerExists });
  const plans = new PlanService({ db: store.handle, peers, mappings, arrays: storageArrays });
  const runs = new RunJournal(store.handle, jobs);
  const recovery = new VmRecovery({ db: store.handle, replicas, vms, poolDir: () => disks.poolDir() });
  const instantRecoveries = new InstantRecoveries({
    recovered: new RecoveredVmRepo(store.handle),
    vms: new VmRepo(store.handle),
    disks: new DiskRepo(store.handle),
    replicas,
    qmpOf: (vmId) => supervisor.qmpOf(vmId),
    log,
  });
  const groups = new ProtectionGroups(store.handle, arrayGroups);
  const peerRecovery = new PeerRecovery({ db: store.handle, replicas, replication, vms, groups, seeding, recovery });
  const actions = new RunStepActions({
    vms,
    replicas,
    peers,
    recovery,
    log,
    replication,
    seeding,
    peerRecovery,
    markSuperseded: (peer, vmId, generation, reason) => protectedSite.markSuperseded(peer, vmId, generation, reason),
    arrays: new ArrayRunActions({
      db: store.handle,
      arrays: storageArrays,
      peers,
      vms,
      groups,
      poolDir: () => disks.poolDir(),
      syncLock: (group, fn) => arrayGroups.scheduler.exclusive(group, fn),
      log,
    }),
    peerContact: (peer) => peerWatch.contact(peer),
  });
  const runner = new PlanRunner({ db: store.handle, plans, journal: runs, actions, log });
  const audit = new AuditLog(new AuditRepo(store.handle));
  // The ports of step 3, bound once every service exists (before step 6 may start a VM).
  startGate.bind(replication);
  superseded.bind(protectedSite);
  cycleEnds.bind(metrics);
  poweredOff.bind(pools.sessions);

  // 6. Recover what the previous server left, now that VMs are re-attached (step 4) and every
  // recovery rule is registered (step 5): cut jobs first (a cut cycle is undone through its
  // VM's QMP), then staged files, replicas and incoming migrations; pool operations resume
  // last, since they start VMs and make disks.
  await jobs.recoverInterrupted((msg, job, err) => log.warn({ jobId: job.id, kind: job.kind, err }, msg));
  await disks.repairStaged();
  await replicas.repair();
  // VMs recovered at a point in time whose overlays still read through its export (some kept
  // running, waiting for it) get it served again before anything may start a VM.
  await instantRecoveries.repair();
  await incoming.repair();
  await pools.resumeInterrupted();
  // A run in flight died with the previous server: it waits for 'mamori plan resume'.
  const interrupted = await runs.markInterrupted();
  if (interrupted.length > 0)
    log.warn(
      { runs: interrupted },
      "plan runs were cut by the server's stop; resume them with 'mamori plan resume RUN'",
    );

  // 7. The API, built apart from listening (tests inject() into it without a socket).
  const app = await buildApp({
    siteName: opts.name,
    tokens,
    vms,
    disks,
    jobs,
    host,
    pairing,
    peers,
    replicas,
    replication,
    incidents,
    groups,
    logger: log,
    networks,
    mappings,
    protectedSite,
    arrayGroups,
    plans,
    runner,
    runs,
    peerRecovery,
    migrations,
    incoming,
    failover,
    conversions,
    exports,
    pools,
    storageArrays,
    storageBench,
    metrics,
    alerts,
    audit,
    authFailures: new AuthFailureLimiter(),
    ...(opts.insecureHttp ? {} : { https: { key: tls.serverKeyPem, cert: tls.serverCertPem } }),
  });
  return {
    app,
    paths,
    host,
    tls,
    peers,
    createdAdminToken,
    async listen(hostName, port) {
      // 8. Listen. The address is known first: replicas' NBD servers and incoming migrations
      // listen where the API does (the one address paired sites reach).
      listenHost = hostName === '0.0.0.0' || hostName === '::' ? '127.0.0.1' : hostName;
      const address = await app.listen({ host: hostName, port });
      // 9. Schedulers and watches, once the API answers: what they do (cycles, alerts, incidents)
      // can then be seen and acted on through it.
      await replication.start();
      alerts.start();
      peerWatch.start();
      incoming.watchLeases();
      instantRecoveries.start();
      journalSpace.start();
      // Did a peer fail our VMs over while we were away? Asked in the background: a peer
      // that is down must not hold up this site's start.
      void replication.learnSupersession();
      await arrayGroups.scheduler
        .start()
        .catch((e: unknown) => log.warn({ err: e }, 'could not schedule the array-based groups'));
      void arrayGroups
        .learnFailovers(
          async (peer) =>
            (await peers.client(peer, { timeoutMs: 5_000 })).request<{ sourceVmId: string; at: string }[]>(
              'GET',
              '/recovery/array-failovers',
            ),
          (peer, vmId, generation, reason) => protectedSite.markSuperseded(peer, vmId, generation, reason),
        )
        .catch((e: unknown) => log.warn({ err: e }, 'could not learn array failovers'));
      // 10. The URL file last: whoever waits for it (the CLI, tests) finds a site that is up.
      const url = address.replace('0.0.0.0', '127.0.0.1');
      await writeFile(paths.urlFile, `${url}\n`);
      return url;
    },
    async close() {
      // 9, undone. Replication stops first, though it started first: no cycle may begin while
      // the rest stops (the alerts' stop can wait on a webhook).
      await replication.shutdown();
      arrayGroups.scheduler.stop();
      await peerWatch.stop();
      await alerts.stop();
      incoming.stopWatchingLeases();
      instantRecoveries.stop();
      journalSpace.stop();
      // Plan runs started through the API stop starting steps (left resumable) before it closes.
      await runner.shutdown();
      // 8 and 7, undone; the last answers' audit entries are written before the database closes.
      await app.close();
      await audit.settled();
      // The replicas' NBD servers (made by ReplicaService, step 5).
      await replicas.shutdown();
      // 4, undone: VMs keep running; the next start re-attaches them.
      await supervisor.detachAll();
      // 1, undone.
      await store.close();
    },
  };
}

/**
 * After a replica-aware live migration: the VM here is superseded, its disks seed the reverse
 * replica, and the destination replicates it back here (the plans' reprotect primitives).
 */
function reverseReplication(d: {
  protectedSite: ProtectedSite;
  seeding: ReplicaSeeding;
  peers: SitePeers;
}): ReverseReplication {
  return {
    async reverse(peer, vmId, generation, opts) {
      await d.protectedSite.markSuperseded(peer, vmId, generation, 'migrated live onto its replica');
      await d.seeding.seed(peer, vmId);
      await (
        await d.peers.client(peer, { timeoutMs: 3_600_000 })
      ).request('POST', `/protection/vms/${encodeURIComponent(vmId)}/replicate-back`, opts);
    },
  };
}
