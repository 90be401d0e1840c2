import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ZfsHost } from '../../../../src/adapters/zfs/zfs-commands.js';
import { parsePoolProps, parseZfsVersion, readPoolSoftware } from '../../../../src/adapters/zfs/zfs-pool-software.js';
import { OPENZFS_FEATURE_SETS } from '../../../../src/adapters/openzfs-feature-sets.js';

// zfs-fuse 0.7.0's `zpool get all` on this machine (Debian's zfs-fuse; what the integration tests run).
const ZFS_FUSE = `NAME                   PROPERTY       VALUE       SOURCE
mamori-cd915a57-probe  size           504M        -
mamori-cd915a57-probe  capacity       0%          -
mamori-cd915a57-probe  altroot        -           default
mamori-cd915a57-probe  health         ONLINE      -
mamori-cd915a57-probe  guid           3162302199002644057  default
mamori-cd915a57-probe  version        23          default
mamori-cd915a57-probe  bootfs         -           default
mamori-cd915a57-probe  delegation     on          default
mamori-cd915a57-probe  cachefile      none        local
mamori-cd915a57-probe  dedupratio     1.00x       -
mamori-cd915a57-probe  ashift         0           default
`;

// OpenZFS 2.2's `zpool get all` (its layout; version "-", one feature@ line per known feature),
// with a comment holding blanks and a feature this software does not know (unsupported@).
const OPENZFS_22 = `NAME  PROPERTY                       VALUE                          SOURCE
tank  size                           480M                           -
tank  version                        -                              default
tank  comment                        rack 4, shelf 2                local
tank  compatibility                  off                            default
tank  bcloneused                     0                              -
tank  feature@async_destroy          enabled                        local
tank  feature@empty_bpobj            active                         local
tank  feature@lz4_compress           active                         local
tank  feature@bookmarks              enabled                        local
tank  feature@extensible_dataset     active                         local
tank  feature@redaction_bookmarks    disabled                       local
tank  feature@block_cloning          disabled                       local
tank  unsupported@com.example:future inactive                       local
`;

test('a zfs-fuse pool is version 23 with no features', () => {
  assert.deepEqual(parsePoolProps(ZFS_FUSE, 'mamori-cd915a57-probe'), { version: 23, features: [] });
});

test('an OpenZFS pool has no version and reports its enabled and active features only', () => {
  assert.deepEqual(parsePoolProps(OPENZFS_22, 'tank'), {
    version: null,
    features: ['async_destroy', 'bookmarks', 'empty_bpobj', 'extensible_dataset', 'lz4_compress'],
  });
  assert.deepEqual(
    parsePoolProps(OPENZFS_22, 'other'),
    { version: null, features: [] },
    "lines of another pool are not this pool's",
  );
});

test("zfs version names the kernel module's OpenZFS release", () => {
  assert.equal(parseZfsVersion('zfs-2.2.2-0ubuntu9.1\nzfs-kmod-2.2.0-0ubuntu1\n'), 'OpenZFS 2.2.0');
  assert.equal(parseZfsVersion('zfs-2.1.11-1\n'), 'OpenZFS 2.1.11');
  assert.equal(parseZfsVersion('unrecognized command'), null);
});

function fakeHost(answers: Record<string, string | Error>): ZfsHost {
  return {
    run: async (tool: string, args: string[]) => {
      const a = answers[`${tool} ${args.join(' ')}`];
      if (a === undefined || a instanceof Error) throw a ?? new Error(`unexpected ${tool} ${args.join(' ')}`);
      return a;
    },
  } as unknown as ZfsHost;
}

test('the software of a legacy pool is its version; of a feature-flag pool its release, or "feature flags"', async () => {
  assert.deepEqual(
    await readPoolSoftware(fakeHost({ 'zpool get all mamori-cd915a57-probe': ZFS_FUSE }), 'mamori-cd915a57-probe'),
    { softwareVersion: 'pool version 23', features: [] },
  );
  const features = ['async_destroy', 'bookmarks', 'empty_bpobj', 'extensible_dataset', 'lz4_compress'];
  assert.deepEqual(
    await readPoolSoftware(
      fakeHost({ 'zpool get all tank': OPENZFS_22, 'zfs version': 'zfs-2.2.2-1\nzfs-kmod-2.2.2-1\n' }),
      'tank',
    ),
    { softwareVersion: 'OpenZFS 2.2.2', features },
  );
  assert.deepEqual(
    await readPoolSoftware(
      fakeHost({ 'zpool get all tank': OPENZFS_22, 'zfs version': new Error('unrecognized command') }),
      'tank',
    ),
    { softwareVersion: 'feature flags', features },
  );
});

test('the OpenZFS feature sets are those of compatibility.d, each release a superset of the one before', () => {
  const sets = OPENZFS_FEATURE_SETS;
  assert.deepEqual(Object.fromEntries(Object.entries(sets).map(([k, v]) => [k, v.length])), {
    'openzfs-2.0-linux': 33,
    'openzfs-2.1-linux': 34,
    'openzfs-2.2': 39,
    'openzfs-2.3': 44,
  });
  const order = ['openzfs-2.0-linux', 'openzfs-2.1-linux', 'openzfs-2.2', 'openzfs-2.3'];
  for (let i = 1; i < order.length; i++)
    assert.ok(
      sets[order[i - 1]!]!.every((f) => sets[order[i]!]!.includes(f)),
      `${order[i]} holds ${order[i - 1]}`,
    );
  assert.ok(!sets['openzfs-2.0-linux']!.includes('draid') && sets['openzfs-2.1-linux']!.includes('draid'));
  assert.ok(!sets['openzfs-2.1-linux']!.includes('block_cloning') && sets['openzfs-2.2']!.includes('block_cloning'));
});
