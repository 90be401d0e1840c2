import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { queryImageInfo, type StoredBitmap } from '../qemu/qemu-img-read.js';
import { editBitmap } from '../qemu/qemu-img-write.js';
import type { QmpClient } from '../qemu/qmp-client.js';

/**
 * Changed-block tracking with QEMU dirty bitmaps (notes/qemu-7.2.md, "Changed-block tracking").
 *
 * Naming: `mamori-<g>` records every write since the fleecing instant of point generation g,
 * which the replica holds (or is receiving). `mamori-<g>-fleece` is the disabled copy a cycle
 * exports; it never outlives the cycle. A disk holds at most two `mamori-<g>` at a time:
 * the previous one and the one a running cycle started.
 */
export const BITMAP_PREFIX = 'mamori-';
export const DEFAULT_GRANULARITY = 64 * 1024;

export function bitmapName(generation: number): string {
  return `${BITMAP_PREFIX}${generation}`;
}

export function fleeceBitmapName(generation: number): string {
  return `${BITMAP_PREFIX}${generation}-fleece`;
}

/** The generation of a `mamori-<g>` name; null for temporaries and foreign bitmaps. */
export function generationOf(name: string): number | null {
  const m = /^mamori-(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

export function isMamoriBitmap(name: string): boolean {
  return name.startsWith(BITMAP_PREFIX);
}

/** Only qcow2 stores bitmaps; raw format nodes and protocol nodes (virtual RDM) cannot. */
export function canPersistBitmaps(driver: string): boolean {
  return driver === 'qcow2';
}

export interface BitmapInfo {
  name: string;
  granularity: number;
  /** Enabled: counting writes. */
  recording: boolean;
  persistent: boolean;
  /** Left `in-use` by a QEMU that did not close the image (kill -9): its bits cannot be trusted. */
  inconsistent: boolean;
  /** Locked by an export or a job. */
  busy: boolean;
  /** Dirty bytes (online only). */
  count: number | null;
}

export type BitmapMode = 'full' | 'incremental' | 'resync';
export type ResyncReason = 'missing' | 'inconsistent' | 'not-recording';

export interface BitmapVerdict {
  mode: BitmapMode;
  /** Set when mode is 'resync': why the bitmap of the last point cannot be trusted. */
  reason: ResyncReason | null;
  /** The bitmap to read changes from (incremental only). */
  previous: BitmapInfo | null;
  /** mamori bitmaps to remove before a new cycle: leftovers of cut cycles, untrustworthy ones. */
  stale: string[];
}

/**
 * Decides how a cycle may read a disk, given the generation of the last point the
 * replica holds (null: never replicated).
 * - never replicated: 'full' (the caller copies allocated extents, `base:allocation`);
 * - its bitmap present, consistent and recording: 'incremental';
 * - otherwise 'resync': the caller compares checksums instead of trusting a bitmap. That is
 *   the case after kill -9 (persistent bitmaps come back inconsistent, and those added since
 *   QEMU started were never stored: they vanish), after any restart of a raw disk or virtual
 *   RDM (their bitmaps are not persistent), or when someone disabled the bitmap.
 */
export function judgeBitmaps(bitmaps: readonly BitmapInfo[], previousGeneration: number | null): BitmapVerdict {
  const ours = bitmaps.filter((b) => isMamoriBitmap(b.name));
  if (previousGeneration === null) {
    return { mode: 'full', reason: null, previous: null, stale: ours.map((b) => b.name) };
  }
  const wanted = bitmapName(previousGeneration);
  const prev = ours.find((b) => b.name === wanted) ?? null;
  let reason: ResyncReason | null = null;
  if (prev === null) reason = 'missing';
  else if (prev.inconsistent) reason = 'inconsistent';
  else if (!prev.recording) reason = 'not-recording';
  if (reason !== null) return { mode: 'resync', reason, previous: null, stale: ours.map((b) => b.name) };
  return {
    mode: 'incremental',
    reason: null,
    previous: prev,
    stale: ours.filter((b) => b.name !== wanted).map((b) => b.name),
  };
}

// ---- online: a running VM, through its QMP client ----

export interface BlockNodeInfo {
  node: string;
  driver: string;
  virtualSize: number;
  /** The image file of a format node (or the file/device of a protocol node). */
  file: string;
  bitmaps: BitmapInfo[];
}

interface RawNamedNode {
  'node-name': string;
  drv: string;
  file: string;
  image: { 'virtual-size': number };
  'dirty-bitmaps'?: {
    name?: string;
    granularity: number;
    recording: boolean;
    persistent: boolean;
    busy: boolean;
    count: number;
    inconsistent?: boolean;
  }[];
}

/** Every named node with its dirty bitmaps (`query-named-block-nodes`, flat). */
export async function queryBlockNodes(qmp: QmpClient, timeoutMs = 10_000): Promise<Map<string, BlockNodeInfo>> {
  const raw = (await qmp.execute('query-named-block-nodes', { flat: true }, { timeoutMs })) as RawNamedNode[];
  const nodes = new Map<string, BlockNodeInfo>();
  for (const n of raw) {
    // Jobs and copy-before-write filters hold anonymous bitmaps; only named ones are anyone's.
    const bitmaps = (n['dirty-bitmaps'] ?? [])
      .filter((b) => typeof b.name === 'string')
      .map((b) => ({
        name: b.name!,
        granularity: b.granularity,
        recording: b.recording,
        persistent: b.persistent,
        inconsistent: b.inconsistent === true,
        busy: b.busy,
        count: b.count,
      }));
    nodes.set(n['node-name'], {
      node: n['node-name'],
      driver: n.drv,
      virtualSize: n.image['virtual-size'],
      file: n.file,
      bitmaps,
    });
  }
  return nodes;
}

export interface DiskBitmapState extends BitmapVerdict {
  node: string;
  driver: string;
  /** Bitmaps on this node survive a clean stop of QEMU (qcow2 only). */
  persistentCapable: boolean;
  needsResync: boolean;
  bitmaps: BitmapInfo[];
}

/** The bitmap state of each disk node of a running VM, judged against the last point. */
export async function inspectBitmaps(
  qmp: QmpClient,
  nodes: readonly string[],
  previousGeneration: number | null,
): Promise<DiskBitmapState[]> {
  const all = await queryBlockNodes(qmp);
  return nodes.map((node) => {
    const info = all.get(node);
    if (info === undefined) {
      throw new MamoriError('DISK_NOT_FOUND', `block node ${node} does not exist in this QEMU; is the disk attached?`, {
        details: { node },
      });
    }
    const verdict = judgeBitmaps(info.bitmaps, previousGeneration);
    return {
      ...verdict,
      node,
      driver: info.driver,
      persistentCapable: canPersistBitmaps(info.driver),
      needsResync: verdict.mode === 'resync',
      bitmaps: info.bitmaps,
    };
  });
}

/**
 * Makes sure `name` exists on `node`: persistent where the format can store it, else a
 * runtime bitmap (`persistent: false`: a stop or crash of QEMU loses it, and the next
 * cycle will be a resync).
 */
export async function ensureBitmap(
  qmp: QmpClient,
  node: string,
  name: string,
  options: { granularity?: number } = {},
): Promise<{ persistent: boolean; created: boolean }> {
  const info = (await queryBlockNodes(qmp)).get(node);
  if (info === undefined)
    throw new MamoriError('DISK_NOT_FOUND', `block node ${node} does not exist in this QEMU`, { details: { node } });
  const existing = info.bitmaps.find((b) => b.name === name);
  if (existing !== undefined) return { persistent: existing.persistent, created: false };
  const persistent = canPersistBitmaps(info.driver);
  await qmp.execute(
    'block-dirty-bitmap-add',
    { node, name, persistent, granularity: options.granularity ?? DEFAULT_GRANULARITY },
    { timeoutMs: 10_000 },
  );
  return { persistent, created: true };
}

// ---- offline: a stopped VM's qcow2 image, with qemu-img ----

/**
 * The bitmaps stored in a qcow2 image. Opened without -U: if a QEMU still has the image
 * open (the VM runs), this fails with DISK_IN_USE instead of reading flags that are
 * `in-use` only because someone is using them.
 */
export async function readImageBitmaps(file: string): Promise<BitmapInfo[]> {
  let stored: StoredBitmap[];
  try {
    stored = (await queryImageInfo(file, { format: 'qcow2' })).bitmaps;
  } catch (e) {
    throw offlineError(e, file);
  }
  return stored.map((b) => ({
    name: b.name,
    granularity: b.granularity,
    recording: b.flags.includes('auto'),
    persistent: true,
    inconsistent: b.flags.includes('in-use'),
    busy: false,
    count: null,
  }));
}

export type ImageBitmapAction =
  | { op: 'add'; granularity?: number; disabled?: boolean }
  | { op: 'remove' }
  | { op: 'clear' }
  | { op: 'enable' }
  | { op: 'disable' }
  | { op: 'merge'; source: string };

/** `qemu-img bitmap` on a stopped VM's qcow2 image: the actions run in order on one bitmap. */
export async function editImageBitmap(
  file: string,
  name: string,
  actions: readonly ImageBitmapAction[],
): Promise<void> {
  const edits = actions.map((a) => (a.op === 'add' ? { ...a, granularity: a.granularity ?? DEFAULT_GRANULARITY } : a));
  try {
    await editBitmap(file, name, edits);
  } catch (e) {
    throw offlineError(e, file);
  }
}

/** Bitmap state of a stopped VM's disk image, judged against the last point. */
export async function inspectImageBitmaps(
  file: string,
  format: 'qcow2' | 'raw',
  previousGeneration: number | null,
): Promise<BitmapVerdict & { persistentCapable: boolean; needsResync: boolean; bitmaps: BitmapInfo[] }> {
  const bitmaps = format === 'qcow2' ? await readImageBitmaps(file) : [];
  const verdict = judgeBitmaps(bitmaps, previousGeneration);
  return { ...verdict, persistentCapable: format === 'qcow2', needsResync: verdict.mode === 'resync', bitmaps };
}

function offlineError(e: unknown, file: string): unknown {
  if (!isMamoriError(e, 'PROCESS_FAILED')) return e;
  const stderr = String(e.details?.['stderr'] ?? '').trim();
  // qemu-img's own wording is all there is to tell a lock conflict from a damaged image.
  if (/lock/i.test(stderr)) {
    return new MamoriError(
      'DISK_IN_USE',
      `${file} is open in another process (a running VM or an export); stop it before editing bitmaps offline`,
      { details: { file, stderr }, cause: e },
    );
  }
  return new MamoriError(
    'IMAGE_UNREADABLE',
    `QEMU cannot read the bitmaps of ${file}: ${stderr.split('\n').at(-1) ?? stderr}`,
    { details: { file, stderr }, cause: e },
  );
}
