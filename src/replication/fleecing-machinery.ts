import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { queryBlockNodes } from './dirty-bitmaps.js';

/**
 * The per-disk machinery of a live fleecing point (fleecing-point.ts) in a running QEMU: the
 * fleece overlay node and its file, the backup job, the NBD export, and the VM's NBD server.
 * Its names are fixed per VM, so everything here can find and remove what a crashed server left.
 */
export interface FleeceMachinery {
  /** NBD export name (also the export id). */
  exportName: string;
  fleeceNode: string;
  /** The protocol node of fleeceFile under fleeceNode (opened by blockdev-create's caller). */
  fleeceFileNode: string;
  fleeceFile: string;
  jobId: string;
}

/** Both kinds of point name their exports (and a live one its nodes, jobs and files) with it. */
export const DEFAULT_PREFIX = 'mamori-fleece';
export const QMP_MS = 10_000;

/** The names of one disk's fleecing machinery: fixed per VM, so a restarted server finds leftovers. */
export function machineryNames(node: string, workDir: string, prefix: string): FleeceMachinery {
  const fleeceNode = `${prefix}-${node}`;
  return {
    exportName: fleeceNode,
    fleeceNode,
    fleeceFileNode: `${fleeceNode}-file`,
    fleeceFile: join(workDir, `${fleeceNode}.qcow2`),
    jobId: `${fleeceNode}-job`,
  };
}

/**
 * After a server died while making a fleecing point (before the point was recorded):
 * removes whatever of the machinery exists and the disabled fleece copies of bitmaps. The
 * bitmaps themselves are judged by the next cycle (a new one beyond the recorded
 * generation is stale and dropped; the recorded one still covers every change).
 */
export async function sweepFleecingLeftovers(
  qmp: QmpClient,
  opts: { nodes: string[]; workDir: string; nbdSocket: string; prefix?: string },
): Promise<void> {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const disks = opts.nodes.map((node) => machineryNames(node, opts.workDir, prefix));
  await removeMachinery(qmp, disks);
  const nodes = await queryBlockNodes(qmp);
  for (const node of opts.nodes) {
    for (const b of nodes.get(node)?.bitmaps ?? []) {
      if (b.name.endsWith('-fleece'))
        await qmp.execute('block-dirty-bitmap-remove', { node, name: b.name }, { timeoutMs: QMP_MS });
    }
  }
  await stopNbdServerIfIdle(qmp, opts.nbdSocket);
}

export async function stopNbdServerIfIdle(qmp: QmpClient, socket: string): Promise<void> {
  if ((await queryExportIds(qmp)).length > 0) return;
  await qmp.execute('nbd-server-stop', undefined, { timeoutMs: QMP_MS }).catch((e: unknown) => {
    if (!isQmpClass(e, 'GenericError')) throw e; // GenericError: no server was running
  });
  await rm(socket, { force: true });
}

export async function removeMachinery(qmp: QmpClient, disks: readonly FleeceMachinery[]): Promise<void> {
  const exportIds = new Set(await queryExportIds(qmp));
  for (const d of disks) {
    if (exportIds.has(d.exportName))
      await qmp.execute('block-export-del', { id: d.exportName, mode: 'hard' }, { timeoutMs: QMP_MS });
  }
  await waitUntil(
    async () => !(await queryExportIds(qmp)).some((id) => disks.some((d) => d.exportName === id)),
    'exports to shut down',
  );
  const jobs = new Set((await qmp.execute('query-block-jobs', undefined, { timeoutMs: QMP_MS })).map((j) => j.device));
  for (const d of disks) {
    if (jobs.has(d.jobId))
      await qmp.execute('block-job-cancel', { device: d.jobId, force: true }, { timeoutMs: QMP_MS });
  }
  await waitUntil(
    async () =>
      !(await qmp.execute('query-block-jobs', undefined, { timeoutMs: QMP_MS })).some((j) =>
        disks.some((d) => d.jobId === j.device),
      ),
    'fleecing jobs to end',
  );
  // The jobs that made the fleece image (createQcow2OverQmp: `${fleeceNode}-mk` then f or q),
  // if a crash came between their end and their dismissal: their ids would be taken.
  for (const j of await qmp.execute('query-jobs', undefined, { timeoutMs: QMP_MS })) {
    if (!disks.some((d) => j.id.startsWith(`${d.fleeceNode}-mk`))) continue;
    if (j.status !== 'concluded') await qmp.execute('job-cancel', { id: j.id }, { timeoutMs: QMP_MS });
    await waitUntil(
      async () =>
        (await qmp.execute('query-jobs', undefined, { timeoutMs: QMP_MS })).find((k) => k.id === j.id)?.status ===
        'concluded',
      'a leftover image-creation job to end',
    );
    await qmp.execute('job-dismiss', { id: j.id }, { timeoutMs: QMP_MS });
  }
  const nodes = await queryBlockNodes(qmp);
  for (const d of disks) {
    if (nodes.has(d.fleeceNode))
      await qmp.execute('blockdev-del', { 'node-name': d.fleeceNode }, { timeoutMs: QMP_MS });
    if (nodes.has(d.fleeceFileNode))
      await qmp.execute('blockdev-del', { 'node-name': d.fleeceFileNode }, { timeoutMs: QMP_MS });
    await rm(d.fleeceFile, { force: true });
  }
}

/**
 * One NBD server per QEMU. If one runs already it is a leftover of ours (a cut cycle) unless
 * it serves exports that are not ours: then the VM is busy with something else.
 */
export async function startNbdServer(qmp: QmpClient, socket: string, prefix: string): Promise<void> {
  const addr = { type: 'unix' as const, data: { path: socket } };
  try {
    await qmp.execute('nbd-server-start', { addr }, { timeoutMs: QMP_MS });
    return;
  } catch (e) {
    if (!isQmpClass(e, 'GenericError')) throw e;
  }
  const foreign = (await queryExportIds(qmp)).filter((id) => !id.startsWith(`${prefix}-`));
  if (foreign.length > 0) {
    throw new MamoriError(
      'VM_INVALID_STATE',
      `this VM's NBD server serves other exports (${foreign.join(', ')}); finish that operation first`,
      { details: { exports: foreign, wanted: 'NBD_SERVER_BUSY' } },
    );
  }
  await qmp.execute('nbd-server-stop', undefined, { timeoutMs: QMP_MS });
  await qmp.execute('nbd-server-start', { addr }, { timeoutMs: QMP_MS });
}

async function queryExportIds(qmp: QmpClient): Promise<string[]> {
  return ((await qmp.execute('query-block-exports', undefined, { timeoutMs: QMP_MS })) as { id: string }[]).map(
    (e) => e.id,
  );
}

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new MamoriError('QMP_TIMEOUT', `gave up waiting for ${what} after ${timeoutMs} ms`, {
        details: { timeoutMs },
      });
    await new Promise((r) => setTimeout(r, 50));
  }
}

function isQmpClass(e: unknown, errorClass: string): boolean {
  return isMamoriError(e, 'QMP_ERROR') && e.details?.['errorClass'] === errorClass;
}
