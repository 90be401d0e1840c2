import { strict as assert } from 'node:assert';
import { access } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { readQemuHostInfo, resolveMachineType } from '../../../src/qemu/qemu-host-info.js';

describe('QEMU host info from the installed QEMU', () => {
  it('reads a version, concrete q35 types, resolves q35, finds OVMF', async (t) => {
    const info = await readQemuHostInfo();
    t.diagnostic(
      `qemu ${info.qemuVersion}, ${info.machineTypes.length} machine types, ovmf ${JSON.stringify(info.ovmf)}`,
    );
    assert.match(info.qemuVersion, /^\d+\.\d+\.\d+$/);
    assert.equal(info.qemuBinary, 'qemu-system-x86_64');
    const q35 = info.machineTypes.find((m) => m.alias === 'q35');
    assert.ok(q35 !== undefined, 'q35 alias present');
    assert.match(q35.name, /^pc-q35-\d+\.\d+$/);
    assert.equal(resolveMachineType('q35', info.machineTypes), q35.name);
    assert.match(resolveMachineType('pc', info.machineTypes), /^pc-i440fx-\d+\.\d+$/);
    assert.equal(info.machineTypes.filter((m) => m.isDefault).length, 1);
    if (info.ovmf !== null) {
      await access(info.ovmf.code);
      await access(info.ovmf.vars);
    }
  });
});
