import { rename, rm, writeFile } from 'node:fs/promises';
import { syncFile } from '../core/durable-sync.js';
import { buildIso9660 } from './iso9660-writer.js';

export interface NoCloudInterface {
  mac: string;
  /** `10.1.0.5/24`, or 'dhcp': the guest asks a DHCP server (gateway and DNS come from it). */
  address: string;
  gateway?: string;
  dns?: string[];
}

export interface NoCloudConfig {
  instanceId: string;
  hostname: string;
  interfaces: NoCloudInterface[];
  /** user-data after `#cloud-config` (YAML); default empty. */
  cloudConfig?: string;
  /** The whole user-data instead (a `#ps1_sysnative` script for cloudbase-init); wins over cloudConfig. */
  userData?: string;
  /** More files on the drive, by name (e.g. the desktop customization script the test guest runs). */
  files?: Record<string, string>;
}

/**
 * The three files of a cloud-init NoCloud seed: meta-data, user-data and a version 2
 * network-config whose ethernets match NICs by MAC (names differ between guests).
 * Written one key per line, so a guest without a YAML parser (the test guest's sh) reads it too.
 */
export function noCloudFiles(c: NoCloudConfig): Record<'meta-data' | 'user-data' | 'network-config', string> {
  const net = ['version: 2', 'ethernets:'];
  c.interfaces.forEach((nic, i) => {
    net.push(`  nic${i}:`, '    match:', `      macaddress: "${nic.mac}"`, `    set-name: nic${i}`);
    if (nic.address === 'dhcp') {
      net.push('    dhcp4: true');
      return;
    }
    net.push(`    addresses: [${nic.address}]`);
    if (nic.gateway) net.push(`    gateway4: ${nic.gateway}`);
    if (nic.dns && nic.dns.length > 0) net.push('    nameservers:', `      addresses: [${nic.dns.join(', ')}]`);
  });
  return {
    'meta-data': `instance-id: ${c.instanceId}\nlocal-hostname: ${c.hostname}\n`,
    'user-data': c.userData ?? `#cloud-config\n${c.cloudConfig ?? ''}`,
    'network-config': `${net.join('\n')}\n`,
  };
}

/**
 * The config drive's bytes: an ISO 9660 volume labelled `cidata` (Rock Ridge and Joliet
 * names), which cloud-init's NoCloud datasource, cloudbase-init and the test guest look for.
 * Made in-process: a desktop pool makes one per desktop, and a genisoimage start cost more
 * than everything else a desktop needs.
 */
export function noCloudImage(c: NoCloudConfig): Buffer {
  return buildIso9660(
    'cidata',
    Object.entries({ ...c.files, ...noCloudFiles(c) }).map(([name, data]) => ({ name, data })),
  );
}

/** Writes a config drive under a temporary name, synced, then renamed: never half a drive under the real name. */
export async function writeNoCloudDrive(path: string, c: NoCloudConfig): Promise<void> {
  const tmp = `${path}.new`;
  try {
    await writeFile(tmp, noCloudImage(c));
    await syncFile(tmp);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
