import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { runProcess } from '../../../src/core/run-process.js';
import { moduleLoadOrder } from '../../../src/guest/guest-kernel.js';
import { isStaticElf } from '../../../src/guest/build-test-guest.js';
import { repoRoot } from '../../harness/repo-root.js';

// Shaped like Debian 6.1's modules.dep: each line lists the full closure.
const DEP = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/lib/crc-t10dif.ko.xz: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
`;

test('modules load after everything they depend on, each once', () => {
  const order = moduleLoadOrder(DEP, ['virtio_pci', 'virtio_blk']);
  assert.deepEqual(order, [
    'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
    'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
    'kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/virtio/virtio.ko',
    'kernel/drivers/virtio/virtio_pci.ko',
    'kernel/drivers/block/virtio_blk.ko',
  ]);
});

test('names match across dashes and underscores and compressed files', () => {
  assert.deepEqual(moduleLoadOrder(DEP, ['crc_t10dif']), [
    'kernel/crypto/crct10dif_common.ko',
    'kernel/lib/crc-t10dif.ko.xz',
  ]);
});

test('a built-in module is skipped; an unknown one is TEST_GUEST_MISSING', () => {
  assert.deepEqual(moduleLoadOrder(DEP, ['evdev'], new Set(['evdev'])), []);
  assert.throws(
    () => moduleLoadOrder(DEP, ['nosuch']),
    (e) => isMamoriError(e, 'TEST_GUEST_MISSING'),
  );
});

test('isStaticElf accepts busybox-static and refuses a dynamic binary', async () => {
  assert.equal(isStaticElf(await readFile('/bin/busybox')), true);
  assert.equal(isStaticElf(await readFile('/bin/ls')), false);
  assert.equal(isStaticElf(Buffer.from('#!/bin/sh\n')), false);
});

test('the guest /init script parses under busybox sh', async () => {
  await runProcess('/bin/busybox', ['sh', '-n', join(repoRoot, 'src/guest/guest-init.sh')]);
});
