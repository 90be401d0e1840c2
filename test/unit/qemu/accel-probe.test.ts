import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { buildProbeBootSector, probeAccelerator } from '../../../src/qemu/accel-probe.js';

describe('probe boot sector', () => {
  it('matches the hand-assembled bytes, the message at 0x17 and the boot signature', () => {
    const s = buildProbeBootSector();
    assert.equal(s.length, 512);
    const code = Buffer.from('FC31C08ED8BAF803BE177CAC84C07403EEEBF8FAF4EBFC', 'hex');
    assert.deepEqual(Buffer.from(s.subarray(0, 23)), code);
    const msg = Buffer.from('MAMORI-PROBE-OK\r\n\0', 'ascii');
    assert.deepEqual(Buffer.from(s.subarray(23, 23 + msg.length)), msg);
    assert.ok(
      s.subarray(23 + msg.length, 510).every((b) => b === 0),
      'zero padding',
    );
    assert.equal(s[510], 0x55);
    assert.equal(s[511], 0xaa);
    // mov si,0x7c17 points at the message once loaded at 0x7c00
    assert.equal((s[9] ?? 0) | ((s[10] ?? 0) << 8), 0x7c00 + 23);
  });
});

describe('probeAccelerator decisions that need no KVM guest', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-accel-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('MAMORI_ACCEL overrides the probe', async () => {
    for (const accel of ['kvm', 'tcg'] as const) {
      const r = await probeAccelerator({ env: { MAMORI_ACCEL: accel }, kvmDevice: join(dir, 'absent') });
      assert.equal(r.accel, accel);
      assert.match(r.reason, /MAMORI_ACCEL/);
      assert.ok(r.probeMs >= 0);
    }
  });

  it('an invalid MAMORI_ACCEL is INVALID_INPUT', async () => {
    const err = await probeAccelerator({ env: { MAMORI_ACCEL: 'hvf' } }).catch((e: unknown) => e);
    assert.ok(isMamoriError(err, 'INVALID_INPUT'));
    assert.match(err.message, /hvf/);
  });

  it('a missing KVM device means tcg, saying why', async () => {
    const r = await probeAccelerator({ env: {}, kvmDevice: join(dir, 'no-kvm') });
    assert.equal(r.accel, 'tcg');
    assert.match(r.reason, /does not exist/);
  });

  it('a QEMU that cannot run or exits early means tcg with its error', async () => {
    const fakeKvm = join(dir, 'kvm');
    await writeFile(fakeKvm, '');
    const missing = await probeAccelerator({ env: {}, kvmDevice: fakeKvm, qemuBinary: join(dir, 'no-qemu') });
    assert.equal(missing.accel, 'tcg');
    assert.match(missing.reason, /could not run/);
    const failing = await probeAccelerator({ env: {}, kvmDevice: fakeKvm, qemuBinary: '/bin/false' });
    assert.equal(failing.accel, 'tcg');
    assert.match(failing.reason, /exited before the boot message/);
  });
});
