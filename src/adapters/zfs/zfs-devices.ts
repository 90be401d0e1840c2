import type { AdapterDevice, PeerRef } from '../adapter-protocol.js';
import { ZfsAdapterError } from './zfs-adapter-error.js';
import { type PropValue, type ZfsHost, numProp, userProp } from './zfs-commands.js';
import { type ZfsConnection, isSafeName } from './zfs-connection.js';

/** The user properties that hold replication state on the datasets themselves. */
export const ROLE_PROP = 'mamori:role';
export const PEER_PROP = 'mamori:peer';
/** Set on a test copy (a clone) to the device it copies; such clones are not devices. */
export const TEST_OF_PROP = 'mamori:test-of';
export const TEST_SUFFIX = '-mamori-test';

const DEVICE_PROPS = [
  'used',
  'available',
  'referenced',
  'mounted',
  'mountpoint',
  'origin',
  ROLE_PROP,
  PEER_PROP,
  TEST_OF_PROP,
];

export type Role = AdapterDevice['role'];

/** One filesystem directly under a pool, and the replication state its properties hold. */
export interface ZfsDevice {
  pool: string;
  id: string;
  dataset: string;
  role: Role;
  /** mamori:role as written; undefined before a source's first sync. */
  roleProp: string | undefined;
  peer: PeerRef | null;
  /** `pool/dataset` of the peer, as mamori:peer holds it. */
  peerDataset: string | null;
  mounted: boolean;
  mountpoint: string | null;
  sizeBytes: number;
}

/** `pool/dataset` → a peer reference; null when the text is not that. */
export function parsePeer(text: string | undefined): PeerRef | null {
  if (text === undefined) return null;
  const parts = text.split('/');
  if (parts.length !== 2 || !isSafeName(parts[0]!) || !isSafeName(parts[1]!)) return null;
  return { arrayId: parts[0]!, deviceId: parts[1]! };
}

/*
 * The role is what mamori:role says, once mamori:peer names a peer. An operator starts
 * replication by setting mamori:peer alone: a dataset with a peer and no role is a
 * source waiting for its first sync (which writes role=source). Without a usable peer a
 * dataset is unreplicated whatever its role says: removing mamori:peer stops replication.
 */
function roleOf(roleProp: string | undefined, peer: PeerRef | null): Role {
  if (!peer) return 'unreplicated';
  if (roleProp === undefined) return 'source';
  if (roleProp === 'source' || roleProp === 'target' || roleProp === 'failedOver') return roleProp;
  return 'unreplicated';
}

function toDevice(pool: string, dataset: string, p: Map<string, PropValue> | undefined): ZfsDevice {
  const roleProp = userProp(p, ROLE_PROP);
  const peerText = userProp(p, PEER_PROP);
  const peer = parsePeer(peerText);
  const mounted = p?.get('mounted')?.value === 'yes';
  const mp = p?.get('mountpoint')?.value;
  return {
    pool,
    id: dataset.slice(pool.length + 1),
    dataset,
    role: roleOf(roleProp, peer),
    roleProp,
    peer,
    peerDataset: peer ? `${peer.arrayId}/${peer.deviceId}` : null,
    mounted,
    mountpoint: mp && mp.startsWith('/') ? mp : null,
    // The most the dataset can hold, its snapshots included: its quota when it has one,
    // else what the pool leaves it. Stable as data comes and goes, like a LUN's size.
    sizeBytes: numProp(p, 'used') + numProp(p, 'available'),
  };
}

/** The pool behind an arrayId of this connection: ARRAY_NOT_FOUND when the connection does not list it. */
export async function assertArray(host: ZfsHost, conn: ZfsConnection, arrayId: string): Promise<void> {
  if (!conn.pools.includes(arrayId)) {
    throw new ZfsAdapterError(
      'ARRAY_NOT_FOUND',
      `array ${JSON.stringify(arrayId)} is not one of this connection's pools (${conn.pools.join(', ')})`,
      { arrayId },
    );
  }
  if (!(await host.poolExists(arrayId))) {
    throw new ZfsAdapterError('POOL_NOT_FOUND', `zpool ${arrayId} is not imported on this host`, { pool: arrayId });
  }
}

/** The pool's devices: filesystems directly under its root, minus the adapter's own test copies. */
export async function readDevices(host: ZfsHost, pool: string): Promise<ZfsDevice[]> {
  const names = await host.childFilesystems(pool);
  const props = await host.getProps(names, DEVICE_PROPS);
  return names
    .filter((n) => userProp(props.get(n), TEST_OF_PROP) === undefined)
    .map((n) => toDevice(pool, n, props.get(n)));
}

/** The devices asked for, in the order asked: DEVICE_NOT_FOUND before any work when one is not there. */
export async function resolveDevices(host: ZfsHost, pool: string, deviceIds: readonly string[]): Promise<ZfsDevice[]> {
  const all = new Map((await readDevices(host, pool)).map((d) => [d.id, d]));
  return deviceIds.map((id) => {
    const d = all.get(id);
    if (!d)
      throw new ZfsAdapterError(
        'DEVICE_NOT_FOUND',
        `pool ${pool} has no filesystem ${JSON.stringify(id)} directly under it`,
        { arrayId: pool, deviceId: id },
      );
    return d;
  });
}

/** The peer's side of a device: its role and the peer it names, or null when the dataset is not there. */
export interface PeerState {
  dataset: string;
  roleProp: string | undefined;
  peerProp: string | undefined;
  mounted: boolean;
  readonly: string | undefined;
  canmount: string | undefined;
}

export async function readPeerState(peerHost: ZfsHost, dataset: string): Promise<PeerState | null> {
  const p = await peerHost.getPropsIfExists(dataset, [ROLE_PROP, PEER_PROP, 'mounted', 'readonly', 'canmount']);
  if (!p) {
    const pool = dataset.split('/')[0]!;
    if (!(await peerHost.poolExists(pool)))
      throw new ZfsAdapterError(
        'POOL_NOT_FOUND',
        `the peer pool ${pool} (from mamori:peer) is not imported on the peer host`,
        { pool, side: 'peer' },
      );
    return null;
  }
  return {
    dataset,
    roleProp: userProp(p, ROLE_PROP),
    peerProp: userProp(p, PEER_PROP),
    mounted: p.get('mounted')?.value === 'yes',
    readonly: p.get('readonly')?.value,
    canmount: p.get('canmount')?.value,
  };
}

/** The adapter's test copies of a pool's devices: clone name → the snapshot it was made from. */
export async function testCopyOrigins(host: ZfsHost, pool: string): Promise<Map<string, string>> {
  const names = await host.childFilesystems(pool);
  const props = await host.getProps(names, [TEST_OF_PROP, 'origin']);
  const out = new Map<string, string>();
  for (const n of names) {
    const p = props.get(n);
    const origin = p?.get('origin')?.value;
    if (userProp(p, TEST_OF_PROP) !== undefined && origin && origin.includes('@')) out.set(n, origin);
  }
  return out;
}

export function requireReplicated(d: ZfsDevice): asserts d is ZfsDevice & { peer: PeerRef; peerDataset: string } {
  if (!d.peer || !d.peerDataset) {
    throw new ZfsAdapterError(
      'NOT_REPLICATED',
      `${d.dataset} is not replicated: set its peer with \`zfs set ${PEER_PROP}=POOL/DATASET ${d.dataset}\``,
      { deviceId: d.id },
    );
  }
  // Its name goes to the peer host (as mamori:peer there), through peerCommand's shell.
  if (!isSafeName(d.id)) {
    throw new ZfsAdapterError(
      'NOT_REPLICATED',
      `${d.dataset} cannot be replicated: its name must be letters, digits, '_', '.', ':' or '-'`,
      { deviceId: d.id },
    );
  }
}

export function requireRole(d: ZfsDevice, command: string, roles: readonly Role[]): void {
  if (!roles.includes(d.role)) {
    throw new ZfsAdapterError(
      'WRONG_ROLE',
      `${command} needs a device whose role is ${roles.join(' or ')}; ${d.dataset} is ${d.role}`,
      { deviceId: d.id, role: d.role },
    );
  }
}
