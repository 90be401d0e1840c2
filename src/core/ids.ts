import { randomBytes, randomUUID } from 'node:crypto';

export function newUuid(): string {
  return randomUUID();
}

/** Short ids for jobs and disks: sortable by creation time, unique enough per site. */
export function newShortId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

/** A locally administered unicast MAC under QEMU's 52:54:00 prefix, as libvirt picks. */
export function newMacAddress(): string {
  const b = randomBytes(3);
  return ['52', '54', '00', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}
