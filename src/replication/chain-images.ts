import { open } from 'node:fs/promises';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { checkImageExclusive, openImageExclusive } from '../qemu/qemu-img-read.js';
import { commitImage, rebaseSafe, rebaseUnsafe, type BackingRef } from '../qemu/qemu-img-write.js';

/**
 * qemu-img over a replica chain's files: the explicit `json:` chain name, and the checks that
 * tell an image some process still holds (a lock conflict: DISK_IN_USE) from a damaged one.
 */

/**
 * A `json:` image name opening the layers with explicit backing (bottom first), for
 * qemu-img convert / compare / map / commit; nothing is taken from image headers.
 */
export function chainImageSpec(layers: readonly { file: string; format: 'qcow2' | 'raw' }[]): string {
  let spec: Record<string, unknown> | null = null;
  for (const layer of layers) {
    const node: Record<string, unknown> = { driver: layer.format, file: { driver: 'file', filename: layer.file } };
    if (layer.format === 'qcow2') node['backing'] = spec;
    else if (spec !== null)
      throw new MamoriError('INVALID_INPUT', 'a raw image can only be the bottom layer', {
        details: { file: layer.file },
      });
    spec = node;
  }
  if (spec === null) throw new MamoriError('INVALID_INPUT', 'an image chain needs at least one layer');
  return `json:${JSON.stringify(spec)}`;
}

export /** qemu-img check without -U: a lock conflict means a writer still has the image open. */
async function assertClosedAndSound(file: string): Promise<void> {
  try {
    // 0 clean, 3 leaked clusters only (harmless).
    await checkImageExclusive(file);
  } catch (e) {
    if (isLockError(e)) throw inUse(file, e);
    if (isMamoriError(e, 'PROCESS_FAILED')) {
      throw new MamoriError(
        'IMAGE_CORRUPT',
        `staging image ${file} is damaged; the cycle cannot become a point: ${String(e.details?.['stderr'] ?? '').trim()}`,
        { cause: e },
      );
    }
    throw e;
  }
}

/**
 * A staging overlay its writer closed cleanly: a qcow2 (magic, version 3) whose header marks
 * it neither dirty (metadata not written back) nor corrupt (QEMU found it damaged). Reads 80
 * bytes; the cheap check of a commit whose writer confirmed the close itself.
 */
export async function assertCleanQcow2Header(file: string): Promise<void> {
  const fd = await open(file, 'r');
  const header = Buffer.alloc(80);
  try {
    await fd.read(header, 0, 80, 0);
  } finally {
    await fd.close();
  }
  const damaged = (why: string): MamoriError =>
    new MamoriError('IMAGE_CORRUPT', `staging image ${file} ${why}; the cycle cannot become a point`, {
      details: { file },
    });
  if (header.readUInt32BE(0) !== 0x514649fb) throw damaged('is not a qcow2 image');
  if (header.readUInt32BE(4) !== 3) throw damaged(`has qcow2 version ${header.readUInt32BE(4)}, not 3`);
  const incompatible = header.readBigUInt64BE(72);
  if ((incompatible & 2n) !== 0n) throw damaged('is marked corrupt by QEMU');
  if ((incompatible & 1n) !== 0n) throw damaged('is marked dirty: its writer did not close it cleanly');
}

/** A file some process holds open must not be deleted under it; unreadable garbage may be. */
export async function assertNotInUse(file: string): Promise<void> {
  try {
    await openImageExclusive(file, 'qcow2');
  } catch (e) {
    if (isLockError(e)) throw inUse(file, e);
    if (!isMamoriError(e, 'PROCESS_FAILED')) throw e;
  }
}

type ChainLayerSpec = readonly { file: string; format: 'qcow2' | 'raw' }[];

/** One step of retention: merge `layers.at(-2)` (a point) into the base below it. */
export interface PointMergeStep {
  /** The replica chain's folder. */
  dir: string;
  /** Bottom first: the seed layers (if any), the base, the point to merge, the point above it. */
  layers: readonly { file: string; format: 'qcow2' | 'raw' }[];
  /** The base's name as the point above must name it in its header (relative to the folder). */
  baseName: string;
}

/** Commits a point into the base and rewrites the next point's header onto the base (ReplicaChain.applyRetention). */
export type PointMerge = (step: PointMergeStep) => Promise<void>;

/**
 * The merge by qemu-img processes, for a chain no daemon holds open: `qemu-img commit` of the
 * point through the explicit chain, stopping at the base when a seed lies below it (see
 * notes: a json: chain cut at the base wrote zeros), then `qemu-img rebase -u` of the next point.
 */
export async function offlineMerge(step: PointMergeStep): Promise<void> {
  const n = step.layers.length;
  if (n < 3) throw new MamoriError('INVALID_INPUT', 'a merge needs the base, the point and the point above it');
  const base = step.layers[n - 3]!.file;
  const point = step.layers[n - 2]!.file;
  const next = step.layers[n - 1]!.file;
  await commitChain(step.layers.slice(0, -1), n > 3 ? base : null, point);
  await rebaseHeader(next, { file: step.baseName, format: 'qcow2' }, next);
}

/** Commits the top layer of `layers` (opened with their explicit chain) down to `base` (its backing when null). */
export async function commitChain(layers: ChainLayerSpec, base: string | null, file: string): Promise<void> {
  await mapLockError(file, () => commitImage(chainImageSpec(layers), base === null ? {} : { base }));
}

/** Safe rebase of the top layer of `layers` (opened with their explicit chain) onto `backing`. */
export async function rebaseChain(layers: ChainLayerSpec, backing: BackingRef | null, file: string): Promise<void> {
  await mapLockError(file, () => rebaseSafe(chainImageSpec(layers), backing));
}

/** Rewrites a layer's backing name in its header only (the bytes it reads are the same). */
export async function rebaseHeader(image: string, backing: BackingRef, file: string): Promise<void> {
  // Header only, but under the same 6 h bound as the merge it follows.
  await mapLockError(file, () => rebaseUnsafe(image, backing, { timeoutMs: 6 * 3600_000 }));
}

async function mapLockError(file: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (e) {
    if (isLockError(e)) throw inUse(file, e);
    throw e;
  }
}

/** qemu-img's wording is the only sign of a lock conflict (it has no exit code for it). */
function isLockError(e: unknown): boolean {
  return isMamoriError(e, 'PROCESS_FAILED') && /lock/i.test(String(e.details?.['stderr'] ?? ''));
}

function inUse(file: string, cause: unknown): MamoriError {
  return new MamoriError(
    'DISK_IN_USE',
    `${file} is open in another process (a storage daemon or a reader); stop it first`,
    { details: { file, wanted: 'REPLICA_BUSY' }, cause },
  );
}
