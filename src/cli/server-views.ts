/**
 * What the OpenAPI document cannot type yet, taken from the server in one place (the console does
 * the same in web/src/api/domain.ts). The layer rule in eslint.config.js lets this file, and no
 * other file of the CLI outside src/cli/offline/, import from the services: each line below says why.
 *
 * - Types of answers whose route declares an open object (`additionalProperties: true`: plans,
 *   runs, pools, arrays, conversion reports) and of job results and contexts (`result`/`context`
 *   are free-form in the Job schema). Type imports only: no server code runs in the CLI through
 *   them. A line goes when its route declares its response schema.
 * - Pure renderers the CLI shares with the server so that a run's report and a failover's data-loss
 *   bound read the same everywhere: functions of the JSON the API sent, with no I/O.
 * - Reading an NBD TLS credentials folder on this machine for `convert` (the CLI sends the PEMs
 *   it finds), and telling an NBD URI from a path: local input checks, no site involved.
 */
export type { StorageArrayView, CompatReportRow } from '../adapters/storage-arrays.js';
export type { AdapterDevice } from '../adapters/adapter-protocol.js';
export type { CompatibilityReport } from '../convert/conversion-service.js';
export type { ConvertResult } from '../convert/conversion-job.js';
export type { ExportResult } from '../convert/export-service.js';
export type { MigrationResult } from '../migration/outgoing-migration.js';
export type { StorageBenchResult } from '../disks/storage-bench.js';
export type { CycleStats } from '../replication/replication-service.js';
export type { WriteLogReport } from '../guest/writelog-verifier.js';
export type { PlanView } from '../plans/plan-view.js';
export type { DryRun } from '../plans/dry-run.js';
export type { PlanRun } from '../plans/run-journal.js';
export type { RunSummary } from '../plans/plan-report.js';
export type { DataLoss } from '../plans/data-loss-bounds.js';
export type { PoolView } from '../pools/pool-views.js';
import type { DesktopSessions } from '../pools/desktop-sessions.js';
import type { PoolService } from '../pools/pool-service.js';
export type DesktopAssigned = Awaited<ReturnType<DesktopSessions['assign']>>;
export type DesktopSessionStarted = Awaited<ReturnType<DesktopSessions['sessionStart']>>;
export type DesktopFreed = Awaited<ReturnType<DesktopSessions['unassign']>>;
export type PersistentDisksSwapped = Awaited<ReturnType<PoolService['movePersistentDisk']>>;

export { dataLossText, storedDataLoss } from '../plans/data-loss-bounds.js';
export { renderRunHtml, summaryText } from '../plans/plan-report.js';
export { looksLikeNbdUri } from '../nbd/nbd-uri.js';
export { readTlsCredsDir } from '../nbd/nbd-tls-creds.js';

/**
 * An answer of a route whose OpenAPI schema is an open object, or a job's free-form result, read
 * as the server's view type named above: the one place the CLI trusts a shape the document does
 * not state.
 */
export function asView<T>(answer: unknown): T {
  return answer as T;
}
