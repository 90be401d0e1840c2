import { ADAPTER_COMMANDS, PROTOCOL_VERSION, type AdapterCommand, type AdapterResults } from '../adapter-protocol.js';
import { ZFS_ERROR_DEFINITIONS, ZfsAdapterError, isZfsAdapterError } from './zfs-adapter-error.js';
import { ZfsHost } from './zfs-commands.js';
import { ZFS_CONNECTION_PARAMETERS, type ZfsConnection } from './zfs-connection.js';
import {
  type ZfsDevice,
  ROLE_PROP,
  TEST_OF_PROP,
  TEST_SUFFIX,
  assertArray,
  readDevices,
  readPeerState,
  requireReplicated,
  requireRole,
  resolveDevices,
} from './zfs-devices.js';
import { POINTS_KEPT, newestPoint } from './zfs-points.js';
import { readPoolSoftware } from './zfs-pool-software.js';
import { CommandProgress, note } from './zfs-progress.js';
import { type Hosts, type Replicated, align, ensureTarget, syncDevice } from './zfs-replication.js';

export const ZFS_ADAPTER_VERSION = '1.0.0';

/** What a command gets: the parsed connection, both hosts, and its validated arguments. */
export interface CommandContext {
  conn: ZfsConnection;
  hosts: Hosts;
  arrayId: string;
  deviceIds: string[];
}

export function hostsOf(conn: ZfsConnection): Hosts {
  return { local: new ZfsHost('local', []), peer: new ZfsHost('peer', conn.peerCommand) };
}

type Handler<C extends AdapterCommand> = (ctx: CommandContext) => Promise<AdapterResults[C]>;

async function queryInfo(): Promise<AdapterResults['queryInfo']> {
  return {
    name: 'zfs',
    vendor: 'mamori',
    version: ZFS_ADAPTER_VERSION,
    protocolVersions: [PROTOCOL_VERSION],
    description:
      'ZFS datasets replicated by zfs send/recv between zpools (OpenZFS or zfs-fuse); state kept in mamori:role and mamori:peer user properties',
  };
}

async function queryCapabilities(): Promise<AdapterResults['queryCapabilities']> {
  // consistencyGroups: zfs-fuse's `zfs snapshot` takes one dataset (only -r is atomic, and
  // that takes every dataset under one parent), so points of two devices are two instants.
  return {
    commands: [...ADAPTER_COMMANDS],
    features: { testFailover: true, reverseReplication: true, consistencyGroups: false },
    deviceKinds: ['filesystem'],
  };
}

async function queryConnectionParameters(): Promise<AdapterResults['queryConnectionParameters']> {
  return { parameters: ZFS_CONNECTION_PARAMETERS.map((p) => ({ ...p })) };
}

async function queryErrorDefinitions(): Promise<AdapterResults['queryErrorDefinitions']> {
  return { errors: ZFS_ERROR_DEFINITIONS.map((e) => ({ ...e })) };
}

async function discoverArrays(ctx: CommandContext): Promise<AdapterResults['discoverArrays']> {
  const arrays: AdapterResults['discoverArrays']['arrays'] = [];
  for (const pool of ctx.conn.pools) {
    await assertArray(ctx.hosts.local, ctx.conn, pool);
    const software = await readPoolSoftware(ctx.hosts.local, pool);
    const peers = new Set<string>();
    for (const d of await readDevices(ctx.hosts.local, pool))
      if (d.peer && d.role !== 'unreplicated') peers.add(d.peer.arrayId);
    arrays.push({
      id: pool,
      name: pool,
      model: 'zpool',
      vendor: 'ZFS',
      // zfs-fuse's pools are "pool version 23"; OpenZFS's have feature flags, which the guide matches.
      softwareVersion: software.softwareVersion,
      features: software.features,
      peers: [...peers].sort(),
    });
  }
  return { arrays };
}

async function discoverDevices(ctx: CommandContext): Promise<AdapterResults['discoverDevices']> {
  await assertArray(ctx.hosts.local, ctx.conn, ctx.arrayId);
  const devices = (await readDevices(ctx.hosts.local, ctx.arrayId)).map((d) => ({
    id: d.id,
    name: d.dataset,
    kind: 'filesystem' as const,
    sizeBytes: d.sizeBytes,
    path: d.mounted ? d.mountpoint : null,
    role: d.role,
    peer: d.role === 'unreplicated' ? null : d.peer,
    consistencyGroup: null,
  }));
  return { devices, consistencyGroups: [] };
}

/** The arrayId checked and the devices asked for, found, replicated, and of the roles the command needs. */
async function devicesFor(
  ctx: CommandContext,
  command: AdapterCommand,
  roles: readonly ZfsDevice['role'][],
): Promise<Replicated[]> {
  await assertArray(ctx.hosts.local, ctx.conn, ctx.arrayId);
  const devs = await resolveDevices(ctx.hosts.local, ctx.arrayId, ctx.deviceIds);
  for (const d of devs) {
    requireReplicated(d);
    requireRole(d, command, roles);
  }
  return devs as Replicated[];
}

async function queryReplicationSettings(ctx: CommandContext): Promise<AdapterResults['queryReplicationSettings']> {
  const devs = await devicesFor(ctx, 'queryReplicationSettings', ['source', 'target', 'failedOver']);
  // A failed-over device keeps its place as the receiving side until reverseReplication turns it around.
  return {
    devices: devs.map((d) => ({
      id: d.id,
      mode: 'async' as const,
      direction: d.role === 'source' ? ('outgoing' as const) : ('incoming' as const),
      peer: d.peer,
      pointsKept: POINTS_KEPT,
    })),
  };
}

async function syncOnce(ctx: CommandContext): Promise<AdapterResults['syncOnce']> {
  const devs = await devicesFor(ctx, 'syncOnce', ['source']);
  const progress = new CommandProgress(devs.length);
  const out: AdapterResults['syncOnce']['devices'] = [];
  for (const [i, d] of devs.entries()) out.push({ id: d.id, ...(await syncDevice(ctx.hosts, d, progress, i)) });
  return { devices: out };
}

async function querySyncStatus(ctx: CommandContext): Promise<AdapterResults['querySyncStatus']> {
  const devs = await devicesFor(ctx, 'querySyncStatus', ['source', 'target', 'failedOver']);
  const out: AdapterResults['querySyncStatus']['devices'] = [];
  for (const d of devs) {
    const local = newestPoint(await ctx.hosts.local.snapshots(d.dataset));
    let peer = null;
    try {
      const state = await readPeerState(ctx.hosts.peer, d.peerDataset);
      peer = state ? newestPoint(await ctx.hosts.peer.snapshots(d.peerDataset)) : null;
    } catch (e) {
      // A status query must answer when the other site is gone (that is when it is asked most).
      if (!isZfsAdapterError(e, 'PEER_UNREACHABLE') && !isZfsAdapterError(e, 'POOL_NOT_FOUND')) throw e;
      note(`${d.id}: the peer's points are unknown: ${e.message}`);
    }
    out.push({
      id: d.id,
      lastPoint: local?.name ?? null,
      lastPointAt: local ? new Date(local.creation * 1000).toISOString() : null,
      peerLastPoint: peer?.name ?? null,
      inSync: local !== null && peer !== null && local.guid === peer.guid,
    });
  }
  return { devices: out };
}

function testCopyName(d: ZfsDevice): string {
  return `${d.dataset}${TEST_SUFFIX}`;
}

async function testFailoverStart(ctx: CommandContext): Promise<AdapterResults['testFailoverStart']> {
  const devs = await devicesFor(ctx, 'testFailoverStart', ['target']);
  const out: AdapterResults['testFailoverStart']['devices'] = [];
  const local = ctx.hosts.local;
  for (const d of devs) {
    const clone = testCopyName(d);
    let existing = await local.getPropsIfExists(clone, [TEST_OF_PROP, 'origin']);
    if (existing && existing.get(TEST_OF_PROP)?.value !== d.id) {
      throw new ZfsAdapterError('NAME_IN_USE', `${clone} exists and is not mamori's test copy of ${d.dataset}`, {
        deviceId: d.id,
        dataset: clone,
      });
    }
    if (!existing) {
      const newest = (await local.snapshots(d.dataset)).at(-1);
      if (!newest)
        throw new ZfsAdapterError('NO_POINT', `${d.dataset} has received no snapshot yet`, { deviceId: d.id });
      // Properties at creation: the clone is marked the moment it exists, so a cut here never leaves an unmarked one.
      await local.run('zfs', [
        'clone',
        '-o',
        `${TEST_OF_PROP}=${d.id}`,
        '-o',
        'readonly=off',
        '-o',
        'canmount=on',
        `${d.dataset}@${newest.name}`,
        clone,
      ]);
      existing = await local.getPropsIfExists(clone, [TEST_OF_PROP, 'origin']);
    }
    await local.mountIfUnmounted(clone);
    const p = (await local.getProps([clone], ['origin', 'mounted', 'mountpoint'])).get(clone);
    const origin = p?.get('origin')?.value ?? existing?.get('origin')?.value ?? '';
    const mp = p?.get('mountpoint')?.value;
    out.push({
      id: d.id,
      point: origin.slice(origin.indexOf('@') + 1),
      testDevice: {
        id: clone.slice(d.pool.length + 1),
        path: p?.get('mounted')?.value === 'yes' && mp?.startsWith('/') ? mp : null,
      },
    });
  }
  return { devices: out };
}

async function testFailoverStop(ctx: CommandContext): Promise<AdapterResults['testFailoverStop']> {
  // Any role, replicated or not: the device may have been failed over, or its peer
  // removed, while a test copy still stood; the copy goes all the same.
  await assertArray(ctx.hosts.local, ctx.conn, ctx.arrayId);
  const devs = await resolveDevices(ctx.hosts.local, ctx.arrayId, ctx.deviceIds);
  const out: AdapterResults['testFailoverStop']['devices'] = [];
  for (const d of devs) {
    const clone = testCopyName(d);
    const p = await ctx.hosts.local.getPropsIfExists(clone, [TEST_OF_PROP]);
    if (p && p.get(TEST_OF_PROP)?.value !== d.id) {
      throw new ZfsAdapterError('NAME_IN_USE', `${clone} is not mamori's test copy of ${d.dataset}; left alone`, {
        deviceId: d.id,
        dataset: clone,
      });
    }
    if (p) await ctx.hosts.local.runWaitingIfBusy('zfs', ['destroy', clone]);
    out.push({ id: d.id, removed: p !== null });
  }
  return { devices: out };
}

async function prepareFailover(ctx: CommandContext): Promise<AdapterResults['prepareFailover']> {
  const devs = await devicesFor(ctx, 'prepareFailover', ['source']);
  const progress = new CommandProgress(devs.length);
  const out: AdapterResults['prepareFailover']['devices'] = [];
  for (const [i, d] of devs.entries()) {
    // Read-only before the last point, not after: no write can land between the point and
    // the lock and be lost at failover. If the sync then fails, the source stays read-only
    // and a rerun finishes the step.
    await ctx.hosts.local.set(d.dataset, 'readonly', 'on');
    const { point } = await syncDevice(ctx.hosts, d, progress, i);
    out.push({ id: d.id, point });
  }
  return { devices: out };
}

async function failover(ctx: CommandContext): Promise<AdapterResults['failover']> {
  const devs = await devicesFor(ctx, 'failover', ['target', 'failedOver']);
  const local = ctx.hosts.local;
  const out: AdapterResults['failover']['devices'] = [];
  // The peer is never asked: failover is what runs when the other site is gone.
  for (const d of devs) {
    const newest = (await local.snapshots(d.dataset)).at(-1);
    if (!newest)
      throw new ZfsAdapterError(
        'NO_POINT',
        `${d.dataset} has received no snapshot yet; there is nothing to fail over to`,
        { deviceId: d.id },
      );
    if (d.role === 'target') {
      // Exactly the newest received point: anything else (a test mount's stray write) is dropped.
      await local.runWaitingIfBusy('zfs', ['rollback', '-r', `${d.dataset}@${newest.name}`]);
      await local.set(d.dataset, 'readonly', 'off');
      await local.set(d.dataset, 'canmount', 'on');
    }
    await local.mountIfUnmounted(d.dataset);
    // The role last: a cut before it leaves a target, and the rerun does it all again.
    if (d.roleProp !== 'failedOver') await local.set(d.dataset, ROLE_PROP, 'failedOver');
    const p = (await local.getProps([d.dataset], ['mounted', 'mountpoint'])).get(d.dataset);
    const mp = p?.get('mountpoint')?.value;
    out.push({
      id: d.id,
      point: newest.name,
      path: p?.get('mounted')?.value === 'yes' && mp?.startsWith('/') ? mp : null,
    });
  }
  return { devices: out };
}

async function prepareReverseReplication(ctx: CommandContext): Promise<AdapterResults['prepareReverseReplication']> {
  const devs = await devicesFor(ctx, 'prepareReverseReplication', ['source', 'target']);
  const local = ctx.hosts.local;
  const out: AdapterResults['prepareReverseReplication']['devices'] = [];
  for (const d of devs) {
    const peer = await readPeerState(ctx.hosts.peer, d.peerDataset);
    if (!peer || (peer.roleProp !== 'failedOver' && peer.roleProp !== 'source')) {
      throw new ZfsAdapterError(
        'PEER_CONFLICT',
        `the peer ${d.peerDataset} has not been failed over (its role is ${peer?.roleProp ?? (peer ? 'unset' : 'missing')}); run failover there first`,
        { deviceId: d.id, peer: d.peerDataset },
      );
    }
    const { common } = await align(ctx.hosts, d, true);
    if (!common)
      throw new ZfsAdapterError('NO_COMMON_POINT', `${d.dataset} and ${d.peerDataset} share no snapshot`, {
        deviceId: d.id,
      });
    await local.set(d.dataset, 'readonly', 'on');
    // Whatever this side wrote or snapshotted after the common point is what the other
    // site never got; it goes, so the two sides are one history again.
    await local.runWaitingIfBusy('zfs', ['rollback', '-r', `${d.dataset}@${common.name}`]);
    await ensureTarget(local, d.dataset, d.peerDataset, null);
    out.push({ id: d.id, commonPoint: common.name });
  }
  return { devices: out };
}

async function reverseReplication(ctx: CommandContext): Promise<AdapterResults['reverseReplication']> {
  const devs = await devicesFor(ctx, 'reverseReplication', ['failedOver', 'source']);
  const out: AdapterResults['reverseReplication']['devices'] = [];
  for (const d of devs) {
    const peer = await readPeerState(ctx.hosts.peer, d.peerDataset);
    if (!peer || peer.roleProp !== 'target') {
      throw new ZfsAdapterError(
        'PEER_CONFLICT',
        `the peer ${d.peerDataset} is not ready to receive (its role is ${peer?.roleProp ?? (peer ? 'unset' : 'missing')}); run prepareReverseReplication there first`,
        { deviceId: d.id, peer: d.peerDataset },
      );
    }
    const { common } = await align(ctx.hosts, d, true);
    if (!common)
      throw new ZfsAdapterError('NO_COMMON_POINT', `${d.dataset} and ${d.peerDataset} share no snapshot`, {
        deviceId: d.id,
      });
    if (d.roleProp !== 'source') await ctx.hosts.local.set(d.dataset, ROLE_PROP, 'source');
    out.push({ id: d.id, peer: d.peer, commonPoint: common.name });
  }
  return { devices: out };
}

async function restoreReplication(ctx: CommandContext): Promise<AdapterResults['restoreReplication']> {
  const devs = await devicesFor(ctx, 'restoreReplication', ['source']);
  const progress = new CommandProgress(devs.length);
  const out: AdapterResults['restoreReplication']['devices'] = [];
  for (const [i, d] of devs.entries()) {
    const peer = await readPeerState(ctx.hosts.peer, d.peerDataset);
    if (peer) {
      const { common } = await align(ctx.hosts, d, true);
      if (
        peer.roleProp === 'source' ||
        peer.roleProp === 'failedOver' ||
        (peer.peerProp !== undefined && peer.peerProp !== `${d.pool}/${d.id}`)
      ) {
        throw new ZfsAdapterError(
          'PEER_CONFLICT',
          `the peer ${d.peerDataset} is ${peer.roleProp ?? 'not'} this device's target (role ${peer.roleProp ?? 'unset'}, peer ${peer.peerProp ?? 'unset'}); refusing to roll it back`,
          { deviceId: d.id, peer: d.peerDataset },
        );
      }
      if (!common)
        throw new ZfsAdapterError('NO_COMMON_POINT', `${d.dataset} and ${d.peerDataset} share no snapshot`, {
          deviceId: d.id,
        });
      // A target written to (made writable by hand) or holding snapshots of its own goes
      // back to the point both hold; then it is made a proper target again.
      await ctx.hosts.peer.runWaitingIfBusy('zfs', ['rollback', '-r', `${d.peerDataset}@${common.name}`]);
      await ensureTarget(ctx.hosts.peer, d.peerDataset, `${d.pool}/${d.id}`, peer);
    }
    const { point } = await syncDevice(ctx.hosts, d, progress, i);
    out.push({ id: d.id, point });
  }
  return { devices: out };
}

export const ZFS_HANDLERS: { [C in AdapterCommand]: Handler<C> } = {
  queryInfo,
  queryCapabilities,
  queryConnectionParameters,
  queryErrorDefinitions,
  discoverArrays,
  discoverDevices,
  queryReplicationSettings,
  syncOnce,
  querySyncStatus,
  testFailoverStart,
  testFailoverStop,
  prepareFailover,
  failover,
  prepareReverseReplication,
  reverseReplication,
  restoreReplication,
};
