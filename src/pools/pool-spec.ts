import { MamoriError } from '../core/mamori-error.js';
import { assertValidName, parseSize } from '../core/names.js';
import type { GuestOs, PoolSpec } from '../store/repos/pool-records.js';
import { poolNetworkOf, type PoolNetworkInput } from './pool-network.js';

/** What an operator asks for (`mamori pool create`), as the API takes it. */
export interface PoolCreateInput {
  name: string;
  master: string;
  snapshot: string;
  size: number;
  /** Name pattern with {n} (or {n:W}, zero-padded to W digits), e.g. `desk-{n}`. */
  namePattern: string;
  /** Desktops kept powered on beyond those in use (View Composer's spare desktops). */
  spare?: number;
  /** User data disk per desktop ("2G"), kept through refresh, recompose and rebalance. */
  persistentDisk?: string;
  /** Swap/temp disk per desktop, replaced by a fresh one at each power-off. */
  disposableDisk?: string;
  /** Storage pools (folders of this site's pools) the desktops spread over; default ['default']. */
  storage?: string[];
  /** Commands run in each desktop at customization, in order. */
  commands?: string[];
  /** Linux: a registration command (subscription-manager register ..., SUSEConnect ...). */
  licenseCommand?: string;
  /** Windows: the KMS host (HOST, HOST:PORT or [V6]:PORT; port 1688 by default) for slmgr. */
  kmsHost?: string;
  /** Seconds the activation may take before it counts as failed (default 60). */
  licenseTimeoutSec?: number;
  /** View Composer's SkipLicenseActivation: labs without a KMS host. */
  skipLicenseActivation?: boolean;
  /** Parallel clone operations: provisioning (default 8) and maintenance (default 12). */
  concurrency?: number;
  maintenanceConcurrency?: number;
  /** Addresses of the desktops' first NIC: DHCP, or static from a range (pool-network.ts); absent: the master's own setup. */
  network?: PoolNetworkInput;
}

export const POOL_LIMITS = {
  size: { min: 1, max: 2000 },
  concurrency: { min: 1, max: 64 },
  licenseTimeoutSec: { min: 5, max: 3600 },
} as const;

const PATTERN = /\{n(?::(\d))?\}/g;

/** The name of desktop n: {n} is the number, {n:W} the number zero-padded to W digits. */
export function desktopName(pattern: string, n: number): string {
  return pattern.replace(PATTERN, (_, w: string | undefined) =>
    String(n).padStart(w === undefined ? 0 : Number(w), '0'),
  );
}

/**
 * Checks a pattern for `count` desktops numbered from 1: it must hold {n} exactly once,
 * and every name it produces must be a valid VM name, all distinct. Returns the names.
 */
export function desktopNames(pattern: string, numbers: readonly number[], guestOs: GuestOs = 'unknown'): string[] {
  const uses = pattern.match(PATTERN)?.length ?? 0;
  if (uses !== 1) {
    throw new MamoriError(
      'INVALID_INPUT',
      `the name pattern ${JSON.stringify(pattern)} must hold {n} exactly once (e.g. desk-{n} or desk-{n:3}); it numbers the desktops`,
    );
  }
  const names = numbers.map((n) => desktopName(pattern, n));
  for (const name of names) assertValidName('desktop', name);
  // A Windows computer name is a NetBIOS name: 15 characters at most (View Composer's limit too).
  const long = guestOs === 'windows' ? names.find((n) => n.length > 15) : undefined;
  if (long)
    throw new MamoriError(
      'INVALID_INPUT',
      `the name pattern ${JSON.stringify(pattern)} gives ${long}, longer than the 15 characters a Windows computer name may have: use a shorter pattern`,
    );
  const seen = new Set<string>();
  for (const name of names) {
    const key = name.toLowerCase();
    if (seen.has(key))
      throw new MamoriError(
        'INVALID_INPUT',
        `the name pattern ${JSON.stringify(pattern)} gives ${name} twice (names differing only in case count as the same): use another pattern`,
      );
    seen.add(key);
  }
  return names;
}

export function intOption(
  what: string,
  v: number | undefined,
  def: number,
  range: { min: number; max: number },
): number {
  const n = v ?? def;
  if (!Number.isInteger(n) || n < range.min || n > range.max)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `${what} must be a whole number from ${range.min} to ${range.max}, not ${JSON.stringify(v)}`,
    );
  return n;
}

const KMS_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(\d{1,5}))?$/;

/** The KMS host as given, checked: a Windows master only, a host name or address, a port that exists. */
function kmsHostOf(input: PoolCreateInput, guestOs: GuestOs): string | null {
  if (input.kmsHost === undefined) {
    if (guestOs === 'windows' && input.licenseCommand !== undefined)
      throw new MamoriError(
        'INVALID_INPUT',
        "the master's snapshot holds Windows, which activates through KMS: give --kms-host instead of --license-command",
      );
    return null;
  }
  const m = typeof input.kmsHost === 'string' ? KMS_HOST.exec(input.kmsHost) : null;
  if (!m || (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 65535))) {
    throw new MamoriError(
      'INVALID_INPUT',
      `the KMS host ${JSON.stringify(input.kmsHost)} is not HOST, HOST:PORT or [IPV6]:PORT (the port defaults to 1688)`,
    );
  }
  if (guestOs !== 'windows')
    throw new MamoriError(
      'INVALID_INPUT',
      `KMS activation is for Windows desktops, and the master's snapshot holds ${guestOs === 'linux' ? 'Linux' : 'no OS mamori recognizes'}: give a registration command with --license-command instead`,
    );
  return input.kmsHost;
}

/** The snapshot the replica is made from, as the operator gave it: a name, not empty. */
export function snapshotName(snapshot: unknown): string {
  if (typeof snapshot !== 'string' || snapshot === '')
    throw new MamoriError('INVALID_INPUT', 'give the master snapshot the replica is made from (--snapshot)');
  return snapshot;
}

/** The stored spec from the operator's input, every option checked and made explicit. */
export function poolSpecOf(
  input: PoolCreateInput,
  master: { id: string; name: string },
  guestOs: GuestOs = 'unknown',
): PoolSpec {
  snapshotName(input.snapshot);
  const storage = input.storage ?? ['default'];
  if (!Array.isArray(storage) || storage.length === 0)
    throw new MamoriError('INVALID_INPUT', 'storage must list at least one storage pool');
  for (const s of storage) assertValidName('storage pool', s);
  const commands = input.commands ?? [];
  if (!Array.isArray(commands) || commands.some((c) => typeof c !== 'string' || c.length === 0 || c.includes('\n')))
    throw new MamoriError('INVALID_INPUT', 'commands must be one-line strings');
  if (
    input.licenseCommand !== undefined &&
    (typeof input.licenseCommand !== 'string' || input.licenseCommand.includes('\n') || input.licenseCommand === '')
  ) {
    throw new MamoriError('INVALID_INPUT', 'the license command must be a one-line shell command');
  }
  return {
    master: { vmId: master.id, name: master.name },
    snapshot: input.snapshot,
    size: intOption('size', input.size, 1, POOL_LIMITS.size),
    spare: intOption('spare (at most the size)', input.spare, 0, {
      min: 0,
      max: intOption('size', input.size, 1, POOL_LIMITS.size),
    }),
    namePattern: input.namePattern,
    storage: [...new Set(storage)],
    commands,
    persistentDiskBytes: input.persistentDisk !== undefined ? parseSize(input.persistentDisk) : null,
    disposableDiskBytes: input.disposableDisk !== undefined ? parseSize(input.disposableDisk) : null,
    licenseCommand: input.licenseCommand ?? null,
    kmsHost: kmsHostOf(input, guestOs),
    guestOs,
    licenseTimeoutSec: intOption('license timeout', input.licenseTimeoutSec, 60, POOL_LIMITS.licenseTimeoutSec),
    skipLicenseActivation: input.skipLicenseActivation === true,
    concurrency: intOption('concurrency', input.concurrency, 8, POOL_LIMITS.concurrency),
    maintenanceConcurrency: intOption(
      'maintenance concurrency',
      input.maintenanceConcurrency,
      12,
      POOL_LIMITS.concurrency,
    ),
    ...(input.network !== undefined
      ? { network: poolNetworkOf(input.network, intOption('size', input.size, 1, POOL_LIMITS.size)) }
      : {}),
  };
}
