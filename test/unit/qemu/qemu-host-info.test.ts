import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { parseMachineHelp, parseQemuVersion, resolveMachineType } from '../../../src/qemu/qemu-host-info.js';

const HELP = `Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
pc-i440fx-7.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-1.4        Standard PC (i440FX + PIIX, 1996) (deprecated)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.0.1         Standard PC (Q35 + ICH9, 2009)
isapc                ISA-only PC
none                 empty machine
`;

describe('QEMU host info parsing', () => {
  it('parses the version line', () => {
    assert.equal(
      parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright ...'),
      '7.2.22',
    );
    assert.equal(parseQemuVersion('QEMU emulator version 8.0\n'), '8.0.0');
    assert.throws(
      () => parseQemuVersion('nonsense'),
      (e: unknown) => isMamoriError(e, 'PROCESS_FAILED'),
    );
  });

  it('parses -machine help, folding aliases into their target', () => {
    const types = parseMachineHelp(HELP);
    assert.deepEqual(
      types.map((t) => t.name),
      ['microvm', 'pc-i440fx-7.2', 'pc-i440fx-7.1', 'pc-i440fx-1.4', 'pc-q35-7.2', 'pc-q35-4.0.1', 'isapc', 'none'],
    );
    assert.deepEqual(
      types.find((t) => t.name === 'pc-i440fx-7.2'),
      { name: 'pc-i440fx-7.2', alias: 'pc', isDefault: true },
    );
    assert.deepEqual(
      types.find((t) => t.name === 'pc-q35-7.2'),
      { name: 'pc-q35-7.2', alias: 'q35', isDefault: false },
    );
    assert.equal(types.find((t) => t.name === 'pc-i440fx-1.4')?.deprecated, true);
    assert.equal(types.filter((t) => t.isDefault).length, 1);
  });

  it('resolves an alias to the concrete type, keeps a concrete type, rejects an unknown one', () => {
    const types = parseMachineHelp(HELP);
    assert.equal(resolveMachineType('q35', types), 'pc-q35-7.2');
    assert.equal(resolveMachineType('pc', types), 'pc-i440fx-7.2');
    assert.equal(resolveMachineType('pc-q35-4.0.1', types), 'pc-q35-4.0.1');
    assert.throws(
      () => resolveMachineType('virt', types),
      (e: unknown) => {
        assert.ok(isMamoriError(e, 'INVALID_INPUT'));
        assert.match(e.message, /virt/);
        assert.ok((e.details?.['valid'] as string[]).includes('q35'));
        assert.ok((e.details?.['valid'] as string[]).includes('pc-q35-7.2'));
        return true;
      },
    );
  });
});
