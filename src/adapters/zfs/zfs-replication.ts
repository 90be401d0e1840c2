import type { PeerRef } from '../adapter-protocol.js';
import { ZfsAdapterError } from './zfs-adapter-error.js';
import type { Snapshot, ZfsHost } from './zfs-commands.js';
import { type PeerState, type ZfsDevice, PEER_PROP, ROLE_PROP, readPeerState, testCopyOrigins } from './zfs-devices.js';
import { POINTS_KEPT, newestCommon, nextPointName, pointsToPrune } from './zfs-points.js';
import { type CommandProgress, mib, note } from './zfs-progress.js';
import { sendReceive } from './zfs-stream.js';

/** This host (where the adapter runs, holding the arrayId's pool) and the peer site's. */
export interface Hosts {
  local: ZfsHost;
  peer: ZfsHost;
}

/** A device with a usable mamori:peer. */
export interface Replicated extends ZfsDevice {
  peer: PeerRef;
  peerDataset: string;
}

/** Both sides' snapshots and the newest one they share. */
export interface Alignment {
  local: Snapshot[];
  peer: Snapshot[];
  common: Snapshot | null;
}

export async function align(hosts: Hosts, dev: Replicated, peerExists: boolean): Promise<Alignment> {
  const local = await hosts.local.snapshots(dev.dataset);
  const peer = peerExists ? await hosts.peer.snapshots(dev.peerDataset) : [];
  return { local, peer, common: newestCommon(local, peer) };
}

/**
 * Refuses to send into a peer dataset that is not this device's target. recv -F rolls
 * its target back, so sending into the wrong dataset destroys data: a peer that is itself
 * a source or was failed over (split brain), or names another dataset as its peer, is
 * left alone. A peer with no role yet is this device's own first copy when they share a
 * snapshot (a first sync cut between the receive and the properties that follow it).
 */
export function assertOwnTarget(dev: Replicated, peer: PeerState, common: Snapshot | null): void {
  const backRef = `${dev.pool}/${dev.id}`;
  if (peer.roleProp === 'source' || peer.roleProp === 'failedOver') {
    throw new ZfsAdapterError(
      'PEER_CONFLICT',
      `the peer ${peer.dataset} is ${peer.roleProp === 'source' ? 'a source itself' : 'failed over (read-write, in use)'}; refusing to overwrite it`,
      { deviceId: dev.id, peer: peer.dataset, peerRole: peer.roleProp },
    );
  }
  if (peer.peerProp !== undefined && peer.peerProp !== backRef) {
    throw new ZfsAdapterError(
      'PEER_CONFLICT',
      `the peer ${peer.dataset} replicates with ${peer.peerProp}, not ${backRef}; refusing to overwrite it`,
      { deviceId: dev.id, peer: peer.dataset, peerPeer: peer.peerProp },
    );
  }
  if (peer.roleProp === undefined && common === null) {
    throw new ZfsAdapterError(
      'PEER_CONFLICT',
      `${peer.dataset} exists on the peer and is not a copy of ${backRef} (no snapshot in common); rename or destroy it for a full copy`,
      { deviceId: dev.id, peer: peer.dataset },
    );
  }
}

/**
 * Makes the peer dataset a proper target: read-only, not mounted, role target, its peer
 * pointing back. Unmounted because zfs-fuse does not drop the kernel's cached pages of a
 * mounted dataset when a receive changes it (a reader would see old data), and because a
 * replica is not for use: failover mounts it, a test copy is a clone. Only what differs
 * is set, so a repeat costs one read.
 */
export async function ensureTarget(
  host: ZfsHost,
  dataset: string,
  backRef: string,
  state: PeerState | null,
): Promise<void> {
  // The unmount comes first: zfs-fuse reports readonly as a mount's "temporary" value while mounted.
  if (!state || state.mounted) {
    if (!state || state.canmount !== 'noauto') await host.set(dataset, 'canmount', 'noauto');
    await host.unmountIfMounted(dataset);
  } else if (state.canmount !== 'noauto') await host.set(dataset, 'canmount', 'noauto');
  if (!state || state.mounted || state.readonly !== 'on') await host.set(dataset, 'readonly', 'on');
  if (state?.peerProp !== backRef) await host.set(dataset, PEER_PROP, backRef);
  if (state?.roleProp !== 'target') await host.set(dataset, ROLE_PROP, 'target');
}

/**
 * One sync of a source: a new point, then what changed since the newest common point
 * (the whole dataset the first time, into a peer dataset the receive creates), then the
 * peer made a target and old points pruned. Every step can be cut and the whole run again:
 * a cut receive leaves the peer at its last point (zfs recv applies a stream whole or not
 * at all; zfs-fuse has no resumable receive), and the rerun sends from there.
 */
export async function syncDevice(
  hosts: Hosts,
  dev: Replicated,
  progress: CommandProgress,
  index: number,
): Promise<{ point: string; bytesSent: number }> {
  const peerState = await readPeerState(hosts.peer, dev.peerDataset);
  const a = await align(hosts, dev, peerState !== null);
  if (peerState) {
    assertOwnTarget(dev, peerState, a.common);
    if (!a.common)
      throw new ZfsAdapterError('NO_COMMON_POINT', `${dev.dataset} and ${dev.peerDataset} share no snapshot`, {
        deviceId: dev.id,
      });
  }
  if (dev.roleProp !== 'source') await hosts.local.set(dev.dataset, ROLE_PROP, 'source');

  const point = nextPointName(new Date(), a.local, a.peer);
  await hosts.local.run('zfs', ['snapshot', `${dev.dataset}@${point}`]);
  const expected = a.common
    ? 0
    : Number(
        (await hosts.local.getProps([`${dev.dataset}@${point}`], ['referenced']))
          .get(`${dev.dataset}@${point}`)
          ?.get('referenced')?.value ?? 0,
      );
  const sendArgs = a.common
    ? ['-i', `${dev.dataset}@${a.common.name}`, `${dev.dataset}@${point}`]
    : [`${dev.dataset}@${point}`];
  progress.step(
    index,
    0,
    `${dev.id}: ${a.common ? `sending changes since ${a.common.name}` : 'first sync: sending the whole dataset'} to ${dev.peerDataset}`,
  );
  progress.resetBytes();
  const bytesSent = await sendReceive(hosts.local, sendArgs, hosts.peer, ['-F', dev.peerDataset], (sent) =>
    progress.bytes(index, dev.id, sent, expected),
  );
  progress.step(index, 0.99, `${dev.id}: ${point} received by ${dev.peerDataset} (${mib(bytesSent)} sent)`);

  await ensureTarget(hosts.peer, dev.peerDataset, `${dev.pool}/${dev.id}`, peerState);
  await prune(hosts, dev, point);
  return { point, bytesSent };
}

/**
 * Keeps the newest POINTS_KEPT points on each side. `keepName` (the point both now hold)
 * and the origins of test copies are never destroyed. A failed destroy is only noted: an
 * extra snapshot costs space, not correctness, and the next sync tries again.
 */
export async function prune(hosts: Hosts, dev: Replicated, keepName: string): Promise<void> {
  for (const [host, dataset] of [
    [hosts.local, dev.dataset],
    [hosts.peer, dev.peerDataset],
  ] as const) {
    try {
      const origins = await testCopyOrigins(host, dataset.split('/')[0]!);
      const protect = new Set([
        keepName,
        ...[...origins.values()].filter((o) => o.startsWith(`${dataset}@`)).map((o) => o.slice(dataset.length + 1)),
      ]);
      for (const s of pointsToPrune(await host.snapshots(dataset), POINTS_KEPT, protect)) {
        await host
          .run('zfs', ['destroy', `${dataset}@${s.name}`])
          .catch((e: unknown) =>
            note(`could not prune ${dataset}@${s.name}: ${e instanceof Error ? e.message : String(e)}`),
          );
      }
    } catch (e) {
      // The sync itself is done; an unpruned side catches up at the next one.
      note(`pruning ${dataset} skipped: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
