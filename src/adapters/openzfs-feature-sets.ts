/*
 * OpenZFS's named feature sets, as its compatibility.d files define them (installed in
 * /usr/share/zfs/compatibility.d; `zpool create -o compatibility=openzfs-2.1-linux` makes a
 * pool with exactly these features). A compatibility guide row may name one of them
 * (`featureSet`) instead of listing every feature: it then requires each feature of the set.
 * OpenZFS pools since 0.6.4 report feature flags, not a pool version (`zpool get version`
 * answers "-"), so these sets are how a row says which OpenZFS pools it covers.
 */
const OPENZFS_2_0_LINUX = [
  'allocation_classes',
  'async_destroy',
  'bookmark_v2',
  'bookmark_written',
  'bookmarks',
  'device_rebuild',
  'device_removal',
  'edonr',
  'embedded_data',
  'empty_bpobj',
  'enabled_txg',
  'encryption',
  'extensible_dataset',
  'filesystem_limits',
  'hole_birth',
  'large_blocks',
  'large_dnode',
  'livelist',
  'log_spacemap',
  'lz4_compress',
  'multi_vdev_crash_dump',
  'obsolete_counts',
  'project_quota',
  'redacted_datasets',
  'redaction_bookmarks',
  'resilver_defer',
  'sha512',
  'skein',
  'spacemap_histogram',
  'spacemap_v2',
  'userobj_accounting',
  'zpool_checkpoint',
  'zstd_compress',
] as const;

const OPENZFS_2_1_LINUX = [...OPENZFS_2_0_LINUX, 'draid'] as const;

const OPENZFS_2_2 = [
  ...OPENZFS_2_1_LINUX,
  'blake3',
  'block_cloning',
  'head_errlog',
  'vdev_zaps_v2',
  'zilsaxattr',
] as const;

const OPENZFS_2_3 = [
  ...OPENZFS_2_2,
  'fast_dedup',
  'large_microzap',
  'longname',
  'raidz_expansion',
  'redaction_list_spill',
] as const;

export const OPENZFS_FEATURE_SETS: Readonly<Record<string, readonly string[]>> = {
  'openzfs-2.0-linux': [...OPENZFS_2_0_LINUX].sort(),
  'openzfs-2.1-linux': [...OPENZFS_2_1_LINUX].sort(),
  'openzfs-2.2': [...OPENZFS_2_2].sort(),
  'openzfs-2.3': [...OPENZFS_2_3].sort(),
};

/** The features a named set requires; undefined for a name mamori does not know. */
export function featureSetFeatures(name: string): readonly string[] | undefined {
  return Object.hasOwn(OPENZFS_FEATURE_SETS, name) ? OPENZFS_FEATURE_SETS[name] : undefined;
}

/** The name of the set whose features are exactly these (a pool made with compatibility=NAME), if any. */
export function featureSetNamed(features: readonly string[]): string | undefined {
  const want = [...new Set(features)].sort().join(',');
  return Object.keys(OPENZFS_FEATURE_SETS).find((n) => OPENZFS_FEATURE_SETS[n]!.join(',') === want);
}
