import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskRecord } from '../disks/disk-record.js';
import type { VmDefinition } from '../vms/vm-definition.js';
import { newMacAddress, newShortId } from '../core/ids.js';
import { syncDirectory } from '../core/durable-sync.js';
import { qcow2Template, writeSparse } from './sparse-image-writer.js';
import { noCloudImage, type NoCloudInterface } from '../guest/nocloud-drive.js';
import { WINDOWS_CUSTOMIZE_SCRIPT, windowsCustomizationScript } from './windows-customization.js';
import { CUSTOMIZE_SCRIPT, customizationCloudConfig, customizationScript } from './desktop-customization.js';
import type { PoolSpec } from '../store/repos/pool-records.js';

/**
 * The files of one desktop, in its own folder of a storage pool:
 *   NAME-os<i>.qcow2     an overlay on replica disk i: the desktop's own changes only
 *   NAME-persistent.qcow2  user data, kept through refresh, recompose and rebalance
 *   NAME-disposable.qcow2  swap and temp, replaced at each power-off
 *   NAME-identity.iso    the customization seed: hostname, instance-id, the script
 * The VM attaches them in that order; the identity disk is last (configDriveDiskId), as a
 * recovery's config drive is, so the OS disk stays disk 0.
 */
export interface DesktopFiles {
  dir: string;
  os: string[];
  persistent: string | null;
  disposable: string | null;
  identity: string;
}

export function desktopFiles(
  storageDir: string,
  pool: string,
  name: string,
  spec: Pick<PoolSpec, 'persistentDiskBytes' | 'disposableDiskBytes'>,
  osDisks: number,
): DesktopFiles {
  const dir = join(storageDir, 'desktops', pool, name);
  return {
    dir,
    os: Array.from({ length: osDisks }, (_, i) => join(dir, `${name}-os${i}.qcow2`)),
    persistent: spec.persistentDiskBytes !== null ? join(dir, `${name}-persistent.qcow2`) : null,
    disposable: spec.disposableDiskBytes !== null ? join(dir, `${name}-disposable.qcow2`) : null,
    identity: join(dir, `${name}-identity.iso`),
  };
}

/** Made under a temporary name and renamed: a half-made image never has the real name. */
async function placeImage(path: string, bytes: Buffer, durable: boolean): Promise<void> {
  const tmp = `${path}.new`;
  await rm(tmp, { force: true });
  await writeSparse(tmp, bytes, durable);
  await rename(tmp, path);
}

async function qcow2(path: string, opts: { backing?: string; sizeBytes?: number; durable?: boolean }): Promise<void> {
  await placeImage(
    path,
    await qcow2Template({
      ...(opts.backing ? { backing: opts.backing } : {}),
      ...(opts.sizeBytes !== undefined ? { sizeBytes: opts.sizeBytes } : {}),
    }),
    opts.durable !== false,
  );
}

/** New OS overlays on the replica: a fresh desktop, or one refreshed to the replica's state. */
export async function writeOsDisks(files: DesktopFiles, replica: string[], durable = true): Promise<void> {
  for (const [i, r] of replica.entries()) await qcow2(files.os[i]!, { backing: r, durable });
}

export async function writeDisposableDisk(files: DesktopFiles, sizeBytes: number, durable = true): Promise<void> {
  if (files.disposable) await qcow2(files.disposable, { sizeBytes, durable });
}

/**
 * Makes a desktop's files and returns its disk records and VM definition (the master's
 * hardware, its own id, MACs and name). The caller writes the rows in one transaction and
 * removes `files.dir` if that fails. `durable: false` leaves flushing to the caller (one
 * syncfs for a batch of desktops costs less than three fsyncs each); the rows must be
 * written only after it.
 */
export async function buildDesktop(input: {
  files: DesktopFiles;
  vmId: string;
  name: string;
  pool: string;
  storage: string;
  spec: PoolSpec;
  master: VmDefinition;
  replica: string[];
  replicaSizes: number[];
  durable?: boolean;
  /** The static address reserved for this desktop (pool-addresses.ts), when the pool's network is static. */
  address?: string;
}): Promise<{ disks: DiskRecord[]; def: VmDefinition }> {
  const { files, spec } = input;
  const durable = input.durable !== false;
  await mkdir(files.dir, { recursive: true });
  await writeOsDisks(files, input.replica, durable);
  if (files.persistent && spec.persistentDiskBytes !== null)
    await qcow2(files.persistent, { sizeBytes: spec.persistentDiskBytes, durable });
  if (spec.disposableDiskBytes !== null) await writeDisposableDisk(files, spec.disposableDiskBytes, durable);
  const nics = input.master.nics.map((n) => ({ ...n, mac: newMacAddress() }));
  // The VM's id as instance-id: stable through refresh and recompose, so the guest does not customize twice.
  const seed = {
    instanceId: input.vmId,
    hostname: input.name,
    interfaces: seedInterfaces(spec, nics[0]?.mac, input.address),
  };
  let identity: Buffer;
  if (spec.guestOs === 'windows') {
    const script = windowsCustomizationScript(spec, input.name);
    identity = noCloudImage({ ...seed, userData: script, files: { [WINDOWS_CUSTOMIZE_SCRIPT]: script } });
  } else {
    const script = customizationScript(spec, input.name);
    identity = noCloudImage({
      ...seed,
      cloudConfig: customizationCloudConfig(script),
      files: { [CUSTOMIZE_SCRIPT]: script },
    });
  }
  await placeImage(files.identity, identity, durable);
  // The rows are written next: the files they name must survive a power cut first.
  if (durable) await syncDirectory(files.dir);
  const now = new Date().toISOString();
  const disk = (name: string, path: string, format: 'qcow2' | 'raw', sizeBytes: number): DiskRecord => ({
    id: newShortId('disk'),
    name,
    pool: input.storage,
    kind: 'image',
    format,
    path,
    sizeBytes,
    rdmMode: null,
    shared: false,
    vmId: input.vmId,
    ownedByVm: true,
    createdAt: now,
    overlays: [],
  });
  const disks = [
    ...files.os.map((p, i) => disk(`${input.name}-os${i}`, p, 'qcow2', input.replicaSizes[i]!)),
    ...(files.persistent
      ? [disk(`${input.name}-persistent`, files.persistent, 'qcow2', spec.persistentDiskBytes!)]
      : []),
    ...(files.disposable
      ? [disk(`${input.name}-disposable`, files.disposable, 'qcow2', spec.disposableDiskBytes!)]
      : []),
    disk(`${input.name}-identity`, files.identity, 'raw', (await stat(files.identity)).size),
  ];
  const { configDriveDiskId: _c, ...hardware } = input.master;
  const def: VmDefinition = {
    ...hardware,
    id: input.vmId,
    name: input.name,
    nics,
    diskIds: disks.map((d) => d.id),
    configDriveDiskId: disks.at(-1)!.id,
  };
  return { disks, def };
}

/** The first NIC's network in the seed: DHCP, or the desktop's static address with the pool's prefix, gateway and DNS. */
function seedInterfaces(spec: PoolSpec, mac: string | undefined, address: string | undefined): NoCloudInterface[] {
  const net = spec.network;
  if (!net || mac === undefined) return [];
  if (net.mode === 'dhcp') return [{ mac, address: 'dhcp' }];
  if (address === undefined)
    throw new Error('a desktop of a pool with static addresses is built without its reserved address');
  return [
    {
      mac,
      address: `${address}/${net.prefix}`,
      ...(net.gateway ? { gateway: net.gateway } : {}),
      ...(net.dns.length > 0 ? { dns: net.dns } : {}),
    },
  ];
}

export async function removeDesktopFiles(files: DesktopFiles): Promise<void> {
  await rm(files.dir, { recursive: true, force: true });
}
