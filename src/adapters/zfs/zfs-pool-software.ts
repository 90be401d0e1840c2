import type { ZfsHost } from './zfs-commands.js';

/** What discoverArrays says of a pool's software: a version for legacy pools, feature flags for OpenZFS ones. */
export interface PoolSoftware {
  softwareVersion: string;
  /** The pool's features that are enabled or active (feature@NAME), sorted; [] on a legacy pool. */
  features: string[];
}

/**
 * `zpool get all POOL` as both zpools print it: a header, then NAME PROPERTY VALUE SOURCE in
 * columns padded with spaces. zfs-fuse's zpool has no -H, so columns are split on runs of
 * blanks; the values read here (a version number, a feature's state) hold no blanks, and
 * other lines (a comment property with spaces) are only skipped.
 *
 * OpenZFS pools answer version "-" (version 5000 inside: feature flags) and one
 * feature@NAME line per feature the software knows: disabled, enabled (may be used) or
 * active (in use on disk). A feature the pool has but the software does not know is an
 * unsupported@GUID line: not a feature this host can use, so not reported.
 */
export function parsePoolProps(text: string, pool: string): { version: number | null; features: string[] } {
  let version: number | null = null;
  const features = new Set<string>();
  for (const line of text.split('\n')) {
    const [name, property, value] = line.trim().split(/\s+/);
    if (name !== pool || property === undefined || value === undefined) continue;
    if (property === 'version' && /^\d+$/.test(value)) version = Number(value);
    else if (property.startsWith('feature@') && (value === 'enabled' || value === 'active'))
      features.add(property.slice('feature@'.length));
  }
  return { version, features: [...features].sort() };
}

/** `zfs version`'s answer (OpenZFS 0.8 and later): the kernel module's release, else the tools'. */
export function parseZfsVersion(text: string): string | null {
  const lines = text.split('\n').map((l) => l.trim());
  const pick = lines.find((l) => l.startsWith('zfs-kmod-')) ?? lines.find((l) => l.startsWith('zfs-'));
  const m = pick?.match(/^zfs-(?:kmod-)?(\d+(?:\.\d+)+)/);
  return m ? `OpenZFS ${m[1]}` : null;
}

/**
 * A legacy pool is "pool version N" (zfs-fuse's are 23), the string the guide's version rows
 * match. A feature-flag pool is named by its OpenZFS release when `zfs version` tells it
 * (only for people: the guide matches such pools by their features), else "feature flags".
 */
export async function readPoolSoftware(host: ZfsHost, pool: string): Promise<PoolSoftware> {
  const { version, features } = parsePoolProps(await host.run('zpool', ['get', 'all', pool]), pool);
  if (version !== null && version < 5000) return { softwareVersion: `pool version ${version}`, features };
  // Older releases have no `zfs version`: the pool is still a feature-flag pool.
  const release = await host.run('zfs', ['version']).then(parseZfsVersion, () => null);
  return { softwareVersion: release ?? 'feature flags', features };
}
