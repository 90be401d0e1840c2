import { open } from 'node:fs/promises';
import { linkCount } from '../disks/shared-layer.js';
import type { VmRepo } from '../store/repos/vm-repo.js';
import type { DesktopPoolRepo, PoolRecord } from '../store/repos/desktop-pool-repo.js';
import type { PoolDesktopRepo } from '../store/repos/pool-desktop-repo.js';
import type { PoolSpec } from '../store/repos/pool-records.js';
import type { SitePaths } from '../core/site-paths.js';
import { customizationState, type DesktopState } from './desktop-customization.js';
import { desktopFiles } from './desktop-clone.js';
import { allocatedBytes } from './storage-space.js';
import { isInUse } from './pool-spares.js';

export interface DesktopView {
  name: string;
  number: number;
  vmState: string;
  state: DesktopState;
  message: string | null;
  storage: string;
  /** Bytes the desktop's OS overlays and identity disk take: its own changes. */
  ownBytes: number;
  /** The pool operation (refresh, recompose) that still has to do this desktop, if one failed or runs. */
  pending: string | null;
  /** The user the desktop is assigned to; null: not assigned. */
  user: string | null;
  /** The session a broker reported on the desktop (ended by it, or by a power-off). */
  session: { user: string; since: string } | null;
  /** Assigned to a user or with a session. A desktop neither in use nor stopped is a spare. */
  inUse: boolean;
  /** The static address the desktop holds from the pool's range; null with DHCP or no network customization. */
  address: string | null;
}

export interface PoolView {
  name: string;
  state: string;
  message: string | null;
  spec: PoolSpec;
  /** `linked`: the master's snapshot layer itself under a second name (pool-replica.ts), not a copy: no space of its own while the master keeps the snapshot. */
  replicas: { storage: string; snapshot: string; sizeBytes: number; linked: boolean; desktops: number }[];
  desktops: DesktopView[];
  /**
   * `usedBytes`: what the pool alone holds, its replicas' own bytes and its desktops';
   * `replicasSharedBytes` of `replicasBytes` are shared with the master's snapshot (linked).
   */
  storage: {
    usedBytes: number;
    replicasBytes: number;
    replicasSharedBytes: number;
    desktopsBytes: number;
    fullCopiesBytes: number;
    savedBytes: number;
  };
}

export interface PoolSummary {
  name: string;
  state: string;
  desktops: number;
  size: number;
  master: string;
  snapshot: string;
}

export async function listPools(pools: DesktopPoolRepo, desktops: PoolDesktopRepo): Promise<PoolSummary[]> {
  const out: PoolSummary[] = [];
  for (const p of await pools.list()) {
    const spec = p.spec;
    out.push({
      name: p.name,
      state: p.state,
      desktops: await desktops.countOf(p.name),
      size: spec.size,
      master: spec.master.name,
      snapshot: spec.snapshot,
    });
  }
  return out;
}

/**
 * A pool as `pool show` gives it: each desktop's VM state, its customization state (read
 * back from its serial log: the newest boot's `mamori-guest customize` lines), the bytes of
 * its own changes, and the storage saved against full copies (one replica's worth each).
 */
export async function poolView(
  repos: { pools: DesktopPoolRepo; desktops: PoolDesktopRepo; vms: VmRepo },
  paths: SitePaths,
  pool: PoolRecord,
): Promise<PoolView> {
  const name = pool.name;
  const spec = pool.spec;
  const replicas = await repos.pools.replicasOf(name);
  const rows = await repos.desktops.listOf(name);
  const addresses = await repos.pools.addressesOf(name);
  const desktops: DesktopView[] = [];
  for (const r of rows) {
    const vm = await repos.vms.findById(r.vmId);
    if (!vm) continue;
    const serial = await serialHead(paths.vmRuntime(vm.id).serialLog);
    const derived = customizationState(serial, serial.length > 0, spec);
    const replica = replicas.find((x) => x.id === r.replicaId);
    const files = desktopFiles(
      paths.pool(replica?.storage ?? 'default'),
      name,
      vm.name,
      spec,
      replica?.files.length ?? 0,
    );
    let ownBytes = 0;
    for (const f of files.os) ownBytes += await allocatedBytes(f);
    ownBytes += await allocatedBytes(files.identity);
    desktops.push({
      name: vm.name,
      number: r.number,
      vmState: vm.state,
      state: derived.state,
      message: derived.message,
      storage: replica?.storage ?? '?',
      ownBytes,
      pending: r.pending,
      user: r.assignedUser,
      session: r.sessionUser !== null ? { user: r.sessionUser, since: r.sessionSince ?? '' } : null,
      inUse: isInUse(r),
      address: addresses.get(r.vmId) ?? null,
    });
  }
  // Linked or not is read from the files now: once the master's snapshot is deleted, the pool alone holds the layer.
  const linked = new Map<string, boolean>();
  for (const r of replicas) linked.set(r.id, await isLinked(r.files));
  const replicasBytes = replicas.reduce((n, r) => n + r.sizeBytes, 0);
  const replicasSharedBytes = replicas.reduce((n, r) => n + (linked.get(r.id) ? r.sizeBytes : 0), 0);
  const desktopsBytes = desktops.reduce((n, d) => n + d.ownBytes, 0);
  const usedBytes = replicasBytes - replicasSharedBytes + desktopsBytes;
  // A full clone copies the snapshot's data: what one replica holds.
  const fullCopiesBytes = (replicas[0]?.sizeBytes ?? 0) * desktops.length;
  return {
    name,
    state: pool.state,
    message: pool.message,
    spec,
    replicas: replicas.map((r) => ({
      storage: r.storage,
      snapshot: r.snapshot,
      sizeBytes: r.sizeBytes,
      linked: linked.get(r.id) ?? false,
      desktops: rows.filter((d) => d.replicaId === r.id).length,
    })),
    desktops,
    storage: {
      usedBytes,
      replicasBytes,
      replicasSharedBytes,
      desktopsBytes,
      fullCopiesBytes,
      savedBytes: fullCopiesBytes - usedBytes,
    },
  };
}

/** Every file of the replica has another name (the master's layer). */
async function isLinked(files: string[]): Promise<boolean> {
  if (files.length === 0) return false;
  for (const f of files) if ((await linkCount(f).catch(() => 1)) < 2) return false;
  return true;
}

/**
 * The start of a desktop's serial log: the guest customizes before its writer starts, so the
 * `customize` lines are in the first kilobytes, while a running desktop's log grows without
 * end. `pool show` of a hundred desktops must not read a hundred whole logs.
 */
const SERIAL_HEAD = 256 * 1024;

async function serialHead(path: string): Promise<string> {
  const fh = await open(path, 'r').catch(() => null);
  if (!fh) return '';
  try {
    const buf = Buffer.alloc(SERIAL_HEAD);
    const { bytesRead } = await fh.read(buf, 0, SERIAL_HEAD, 0);
    // A line cut at the end of the window is left out, not read half.
    const text = buf.toString('utf8', 0, bytesRead);
    return bytesRead === SERIAL_HEAD ? text.slice(0, text.lastIndexOf('\n') + 1) : text;
  } finally {
    await fh.close();
  }
}
