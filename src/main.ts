import { mkdir, open, readFile, writeFile, rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './api/build-app.js';
import { createLogger, type Logger } from './core/logger.js';
import { SitePaths } from './core/site-paths.js';
import { assertValidName } from './core/names.js';
import { MamoriError } from './core/mamori-error.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';
import { TokenRepo } from './store/repos/token-repo.js';
import { VmRepo } from './store/repos/vm-repo.js';
import { DiskRepo } from './store/repos/disk-repo.js';
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
import { PeerWatch, DEFAULT_PEER_CHECK_MS } from './sites/peer-watch.js';
import { SiteMetrics } from './metrics/site-metrics.js';
import { siteMetricSources } from './metrics/metric-sources.js';
import { ProtectionGroups } from './plans/protection-groups.js';
import { SiteNetworks } from './networks/site-networks.js';
import { InventoryMappings } from './plans/inventory-mappings.js';
import { ProtectedSite } from './plans/protected-site.js';
import { ArrayGroups } from './plans/array-groups.js';
import { ArrayRunActions } from './plans/array-run-actions.js';
import { PlanService } from './plans/plan-service.js';
import { PlanRunner } from './plans/plan-runner.js';
import { RunJournal } from './plans/run-journal.js';
import { VmRecovery } from './plans/vm-recovery.js';
import { ReplicaSeeding } from './plans/replica-seeding.js';
import { PeerRecovery } from './plans/peer-recovery.js';
import { RunStepActions } from './plans/run-step-actions.js';
import { IncomingMigrations } from './migration/incoming-migration.js';
import { LiveMigrations } from './migration/live-migration.js';
import type { OutgoingState } from './migration/outgoing-state.js';
import { VmFailover } from './plans/vm-failover.js';
import { ConversionService } from './convert/conversion-service.js';
import { ExportService } from './convert/export-service.js';
import { PoolService } from './pools/pool-service.js';
import { StorageArrays } from './adapters/storage-arrays.js';
import { StorageBench } from './disks/storage-bench.js';
import { HostPathPolicy, type HostPathAllowList } from './host/host-path-policy.js';
import { assertPrivateDataDir } from './core/data-dir-modes.js';
import { loadSecretKey, type SecretBox } from './core/secret-box.js';
import { holdsSealedValues } from './store/sealed-values.js';
import { AlertOutbox } from './events/alert-outbox.js';
import { AuditLog } from './audit/audit-log.js';
import { AuditRepo } from './store/repos/audit-repo.js';
import { AuthFailureLimiter } from './api/auth-failure-limiter.js';

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

/** The composition root: one site = data folder + database + API + its QEMU processes. */
export async function openSite(opts: SiteOptions): Promise<Site> {
  assertValidName('site', opts.name);
  const log = opts.logger ?? createLogger({ name: opts.name });
  const paths = new SitePaths(opts.dataDir);
  // Everything this server makes (the database and its -wal/-shm, keys, tokens, VM images
  // made by qemu-img, sockets) is its user's alone; children inherit the mask.
  process.umask(0o077);
  await assertPrivateDataDir(paths.root, paths.secretFiles);
  await mkdir(paths.root, { recursive: true, mode: 0o700 });
  const store = await openStore({ sqliteFile: paths.database, postgresUrl: opts.databaseUrl });
  const { box, tokens, createdAdminToken } = await openSecrets(store, paths, log).catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  const tls = await ensureSiteTls({ dir: paths.tlsDir, siteName: opts.name, serverNames: serverNamesFor(opts.serverNames ?? []) });
  if (tls.created.length) log.info({ created: tls.created, fingerprint: tls.caFingerprint, names: tls.serverNames }, 'site TLS material made');
  const host = new HostService({ siteName: opts.name, log, ...(opts.guestDir ? { guestDir: opts.guestDir } : {}) });
  const jobs = new JobJournal(store.db);
  const hostPaths = new HostPathPolicy({ dataDir: paths.root, ...(opts.hostPaths ? { allow: opts.hostPaths } : {}) });
  const disks = new DiskService({ db: store.db, paths, jobs, log, hostPaths });
  const networks = new SiteNetworks({ db: store.db, log });
  await networks.restore();
  const supervisor = new VmSupervisor({ vms: new VmRepo(store.db), disks: new DiskRepo(store.db), paths, host, log, bridgeOf: (n) => networks.bridgeOf(n) });
  const vms = new VmService({
    db: store.db, paths, disks, supervisor,
    resolveMachineType: (t) => host.resolveMachineType(t),
    testGuestAvailable: async () => void (await host.testGuest()),
    networkExists: async (n) => void (await networks.get(n)),
  });
  await supervisor.reattachAll();
  const peerRepo = new PeerRepo(store.db, box);
  const pairing = new SitePairing({ siteName: opts.name, tls, peers: peerRepo, tokens, log });
  const peers = new SitePeers({ peers: peerRepo });
  // The replica's NBD server listens where the API does: the one address paired sites reach.
  let listenHost = '127.0.0.1';
  const replicas = new ReplicaService({ db: store.db, dataDir: paths.root, listenHost: () => listenHost, tls: async () => tls, log });
  const incidents = new IncidentLog(store.db);
  const alerts = new AlertNotifier({ db: store.db, box, incidents, siteName: opts.name, log });
  const peerWatch = new PeerWatch({ peers, incidents, log, intervalMs: opts.peerCheckIntervalMs ?? peerCheckFromEnv() });
  const replication = new ReplicationService({ db: store.db, vms, supervisor, peers, tls, paths, jobs, incidents, log });
  vms.setStartGate((vmId, start) => replication.aroundVmStart(vmId, start));
  const incoming = new IncomingMigrations({ db: store.db, vms, supervisor, disks, paths, tls, listenHost: () => listenHost, log, replicas });
  const migrations = new LiveMigrations({ db: store.db, vms, supervisor, peers, tls, paths, jobs, log, replication });
  const failover = new VmFailover({ db: store.db, vms, peers, jobs, log });
  const conversions = new ConversionService({ disks, vms, jobs, log, runDir: paths.conversionsDir, resolveMachineType: (t) => host.resolveMachineType(t) });
  const exports = new ExportService({ disks, vms, jobs, log, defaultDir: paths.exportsDir });
  const pools = new PoolService({ db: store.db, vms, disks, jobs, paths, log });
  const storageArrays = new StorageArrays(store.db, box);
  disks.arrayDeviceDir = (storage, deviceId, arrayId) => storageArrays.deviceDir(storage, deviceId, arrayId);
  const storageBench = new StorageBench({ vms, disks, jobs, paths, log });
  incoming.askSource = async (site, vmId) =>
    (await (await peers.client(site, { timeoutMs: 10_000 })).request<{ state: OutgoingState }>('GET', `/migrations/outgoing/${vmId}`)).state;
  // After re-attaching VMs (a cut replication cycle is undone through its VM's QMP) and after
  // every service has registered its recovery rules.
  await jobs.recoverInterrupted((msg, job, err) => log.warn({ jobId: job.id, kind: job.kind, err }, msg));
  await disks.repairStaged();
  await replicas.repair();
  await incoming.repair();
  await pools.resumeInterrupted();
  const arrayGroups = new ArrayGroups({ db: store.db, arrays: storageArrays, vms, log, peerExists: async (n) => void (await peers.record(n)) });
  const metrics = new SiteMetrics(siteMetricSources({ db: store.db, replication, arrayGroups, incidents, replicas }));
  replication.onCycleEnded = (e) => metrics.cycleEnded(e);
  const protectedSite = new ProtectedSite({ db: store.db, siteName: opts.name, vms, replication, log, arrays: arrayGroups });
  replication.onSuperseded = (peer, vmId, generation, reason) => protectedSite.markSuperseded(peer, vmId, generation, reason);
  const mappings = new InventoryMappings({ db: store.db, networks, peerExists: async (n) => void (await peers.record(n)) });
  const plans = new PlanService({ db: store.db, peers, mappings, arrays: storageArrays });
  const runs = new RunJournal(store.db);
  // A run in flight died with the previous server: it waits for 'mamori plan resume'.
  const interrupted = await runs.markInterrupted();
  if (interrupted.length > 0) log.warn({ runs: interrupted }, "plan runs were cut by the server's stop; resume them with 'mamori plan resume RUN'");
  const recovery = new VmRecovery({ db: store.db, replicas, vms, poolDir: () => disks.poolDir() });
  const groups = new ProtectionGroups(store.db, arrayGroups);
  const seeding = new ReplicaSeeding({ db: store.db, replicas, vms, dataDir: paths.root, log });
  const peerRecovery = new PeerRecovery({ db: store.db, replicas, replication, vms, groups, seeding, recovery });
  const actions = new RunStepActions({
    vms, replicas, peers, recovery, log, replication, seeding, peerRecovery,
    markSuperseded: (peer, vmId, generation, reason) => protectedSite.markSuperseded(peer, vmId, generation, reason),
    arrays: new ArrayRunActions({ db: store.db, arrays: storageArrays, peers, vms, groups, poolDir: () => disks.poolDir(), log }),
    peerContact: (peer) => peerWatch.contact(peer),
  });
  const runner = new PlanRunner({ db: store.db, plans, journal: runs, actions, log });
  // After a replica-aware migration the VM here is superseded, its disks seed the reverse replica,
  // and the destination replicates it back (the plans' reprotect primitives).
  migrations.reverseReplication = async (peer, vmId, generation, opts) => {
    await protectedSite.markSuperseded(peer, vmId, generation, 'migrated live onto its replica');
    await seeding.seed(peer, vmId);
    await (await peers.client(peer, { timeoutMs: 3_600_000 })).request('POST', `/protection/vms/${encodeURIComponent(vmId)}/replicate-back`, opts);
  };
  const audit = new AuditLog(new AuditRepo(store.db));
  const app = await buildApp({
    siteName: opts.name, tokens, vms, disks, jobs, host, pairing, peers, replicas, replication, incidents, groups, logger: log,
    networks, mappings, protectedSite, arrayGroups, plans, runner, runs, peerRecovery, migrations, incoming, failover, conversions, exports, pools, storageArrays, storageBench, metrics, alerts,
    audit, authFailures: new AuthFailureLimiter(),
    ...(opts.insecureHttp ? {} : { https: { key: tls.serverKeyPem, cert: tls.serverCertPem } }),
  });
  return {
    app, paths, host, tls, peers, createdAdminToken,
    async listen(hostName, port) {
      listenHost = hostName === '0.0.0.0' || hostName === '::' ? '127.0.0.1' : hostName;
      const address = await app.listen({ host: hostName, port });
      await replication.start();
      alerts.start();
      peerWatch.start();
      incoming.watchLeases();
      // Did a peer fail our VMs over while we were away? Asked in the background: a peer
      // that is down must not hold up this site's start.
      void replication.learnSupersession();
      await arrayGroups.scheduler.start().catch((e: unknown) => log.warn({ err: e }, 'could not schedule the array-based groups'));
      void arrayGroups.learnFailovers(
        async (peer) => (await peers.client(peer, { timeoutMs: 5_000 })).request<{ sourceVmId: string; at: string }[]>('GET', '/recovery/array-failovers'),
        (peer, vmId, generation, reason) => protectedSite.markSuperseded(peer, vmId, generation, reason),
      ).catch((e: unknown) => log.warn({ err: e }, 'could not learn array failovers'));
      const url = address.replace('0.0.0.0', '127.0.0.1');
      await writeFile(paths.urlFile, `${url}\n`);
      return url;
    },
    async close() {
      replication.shutdown();
      arrayGroups.scheduler.stop();
      await peerWatch.stop();
      await alerts.stop();
      incoming.stopWatchingLeases();
      await runner.shutdown();
      await app.close();
      // The last answers' entries are written before the database closes.
      await audit.settled();
      await replicas.shutdown();
      await supervisor.detachAll();
      await store.close();
    },
  };
}

/**
 * The at-rest key and the tokens: the key is made only while the database holds nothing
 * sealed with one (SECRET_KEY_MISSING otherwise); the admin token at first start.
 */
async function openSecrets(store: Store, paths: SitePaths, log: Logger): Promise<{ box: SecretBox; tokens: TokenRepo; createdAdminToken: string | null }> {
  const { box, created } = await loadSecretKey(paths.secretKey, !(await holdsSealedValues(store.db)));
  if (created) log.info({ file: paths.secretKey }, "at-rest key made: back it up with the database (the database's secrets are sealed with it)");
  const tokens = new TokenRepo(store.db, box);
  let createdAdminToken: string | null = null;
  if (!(await tokens.hasAdmin())) {
    createdAdminToken = await tokens.create('admin', 'admin');
    await writeSecret(paths.adminToken, createdAdminToken);
  }
  await sealLegacySecrets({ db: store.db, box, tokens, paths, log });
  // A secret.key from another backup or site opens nothing here: say so now (SECRET_UNREADABLE),
  // not at the first pairing or peer call.
  await tokens.pairingKeys();
  await new PeerRepo(store.db, box).list();
  return { box, tokens, createdAdminToken };
}

/**
 * Upgrade from before secrets were sealed: values kept in clear are sealed in place, and the
 * admin token's pairing key is made from DATA/admin-token when that file still matches it.
 */
async function sealLegacySecrets(d: { db: Store['db']; box: SecretBox; tokens: TokenRepo; paths: SitePaths; log: Logger }): Promise<void> {
  const adminToken = await readFile(d.paths.adminToken, 'utf8').then((t) => t.trim(), () => null);
  const unkeyed = await d.tokens.sealMissingPairingKeys(adminToken);
  if (unkeyed > 0) {
    d.log.warn({ adminTokens: unkeyed }, `an admin token made before pairing keys were sealed cannot be used to pair with this site (${d.paths.adminToken} is gone or holds another token): make a new admin token for pairing`);
  }
  const peers = await new PeerRepo(d.db, d.box).sealClearTokens();
  const arrays = await new StorageArrays(d.db, d.box).sealClearConnections();
  const webhook = await new AlertOutbox(d.db, d.box).sealClearWebhook();
  if (peers + arrays > 0 || webhook) d.log.info({ peerTokens: peers, arrayConnections: arrays, webhook }, 'secrets kept in clear were sealed with the at-rest key');
}

/** Written once with mode 0600; an existing file is replaced only when the database had no admin. */
async function writeSecret(path: string, secret: string): Promise<void> {
  await rm(path, { force: true });
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.writeFile(`${secret}\n`);
  } finally {
    await fh.close();
  }
}

/** MAMORI_PEER_CHECK_MS: tests check peers every second or two instead of every 30 s. */
function peerCheckFromEnv(): number {
  const text = process.env['MAMORI_PEER_CHECK_MS'];
  if (text === undefined || text === '') return DEFAULT_PEER_CHECK_MS;
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms < 100 || ms > 3_600_000) throw new MamoriError('OUT_OF_RANGE', `MAMORI_PEER_CHECK_MS must be a whole number of milliseconds from 100 to 3600000, got ${JSON.stringify(text)}`);
  return ms;
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port > 65535) throw new MamoriError('INVALID_INPUT', `--listen must be HOST:PORT (e.g. 127.0.0.1:8443), got ${JSON.stringify(text)}`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}
