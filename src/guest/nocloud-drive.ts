import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../core/run-process.js';
import { MamoriError } from '../core/mamori-error.js';

export interface NoCloudInterface {
  mac: string;
  /** `10.1.0.5/24` */
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
    net.push(`  nic${i}:`, '    match:', `      macaddress: "${nic.mac}"`, `    set-name: nic${i}`, `    addresses: [${nic.address}]`);
    if (nic.gateway) net.push(`    gateway4: ${nic.gateway}`);
    if (nic.dns && nic.dns.length > 0) net.push('    nameservers:', `      addresses: [${nic.dns.join(', ')}]`);
  });
  return {
    'meta-data': `instance-id: ${c.instanceId}\nlocal-hostname: ${c.hostname}\n`,
    'user-data': `#cloud-config\n${c.cloudConfig ?? ''}`,
    'network-config': `${net.join('\n')}\n`,
  };
}

/**
 * Writes a NoCloud config drive: an ISO 9660 volume labelled `cidata` (with Joliet and Rock
 * Ridge names), which cloud-init's NoCloud datasource and the test guest both look for.
 */
export async function writeNoCloudDrive(path: string, c: NoCloudConfig): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-cidata-'));
  try {
    for (const [name, text] of Object.entries({ ...c.files, ...noCloudFiles(c) })) await writeFile(join(dir, name), text);
    await runProcess('genisoimage', ['-quiet', '-output', path, '-volid', 'cidata', '-joliet', '-rock', dir], { timeoutMs: 30_000 });
  } catch (e) {
    await rm(path, { force: true });
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || /ENOENT|not found/.test((e as Error).message)) {
      throw new MamoriError('PROCESS_FAILED', 'genisoimage is missing: it makes the cloud-init config drive; install it with: apt-get install genisoimage', { cause: e });
    }
    throw e;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
