import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryHive } from '../../../src/inspect/registry-hive.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import {
  emptyHive,
  hiveCells,
  keyCellOffset,
  moveValueToBigData,
  splitSubkeyListIntoIndexRoot,
} from '../../harness/empty-hive.js';

/**
 * Hives are made the way a Windows guest's would be read: an empty hive from the harness,
 * filled by Debian's hivexregedit from .reg text, then read back both by RegistryHive and by
 * hivexget, so the parser is checked against an independent reader.
 */

const workDir = mkdtempSync(join(tmpdir(), 'mamori-hive-'));
after(() => rmSync(workDir, { recursive: true, force: true }));

const CURRENT_VERSION = 'Microsoft\\Windows NT\\CurrentVersion';
const BIG_BINARY = Buffer.from(Array.from({ length: 40_000 }, (_, i) => (i * 7 + (i >> 8)) & 0xff));
const MANY_SUBKEYS = Array.from({ length: 600 }, (_, i) => `Driver${String(i).padStart(4, '0')}`);

let fileCounter = 0;

function toRegHex(bytes: Buffer): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(',');
}

function utf16z(...strings: string[]): Buffer {
  return Buffer.from(strings.map((s) => `${s}\0`).join(''), 'utf16le');
}

/**
 * .reg text for `sections` (key path relative to the hive root → value lines). hivexregedit
 * only creates a key whose parent exists, so every ancestor gets its own (empty) section first.
 */
function regText(root: string, sections: [string, string[]][]): string {
  const lines = ['Windows Registry Editor Version 5.00', ''];
  const written = new Set<string>();
  for (const [path, values] of sections) {
    const parts = path.split('\\');
    for (let i = 1; i <= parts.length; i++) {
      const key = parts.slice(0, i).join('\\');
      const own = i === parts.length;
      if (written.has(key) && !own) continue;
      written.add(key);
      lines.push(`[HKEY_LOCAL_MACHINE\\${root}\\${key}]`, ...(own ? values : []), '');
    }
  }
  return lines.join('\n');
}

/** An empty hive merged with .reg text by hivexregedit; returns the file path. */
function buildHive(root: string, sections: [string, string[]][]): string {
  const n = fileCounter++;
  const hivePath = join(workDir, `${root}-${n}.hive`);
  const regPath = join(workDir, `${root}-${n}.reg`);
  writeFileSync(hivePath, emptyHive());
  writeFileSync(regPath, regText(root, sections));
  execFileSync('hivexregedit', ['--merge', hivePath, '--prefix', `HKEY_LOCAL_MACHINE\\${root}`, regPath], {
    stdio: 'pipe',
  });
  return hivePath;
}

function hivexget(hivePath: string, key: string, value: string): Buffer {
  return execFileSync('hivexget', [hivePath, key, value], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function writeHive(buf: Buffer, label: string): string {
  const p = join(workDir, `${label}-${fileCounter++}.hive`);
  writeFileSync(p, buf);
  return p;
}

function assertUnreadable(fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => isMamoriError(e, 'FILESYSTEM_UNREADABLE'));
}

const softwarePath = buildHive('SOFTWARE', [
  [
    CURRENT_VERSION,
    [
      '"ProductName"="Windows Server 2012 R2 Standard"',
      '"CurrentVersion"="6.3"',
      '"CurrentBuildNumber"="9600"',
      '"CurrentBuild"="9600"',
      '"InstallationType"="Server"',
      '"EditionID"="ServerStandard"',
      '"CurrentMajorVersionNumber"=dword:0000000a',
      '"CurrentMinorVersionNumber"=dword:00000000',
      `"SystemRoot"=hex(2):${toRegHex(utf16z('%SystemDrive%\\Windows'))}`,
      `"Paths"=hex(7):${toRegHex(Buffer.concat([utf16z('C:\\One', 'D:\\Two'), Buffer.from([0, 0])]))}`,
      '"InstallTime"=hex(b):00,10,32,54,76,98,ba,01',
      '"Small"=hex:de,ad',
      '"Empty"=hex:',
      `"BigBlob"=hex:${toRegHex(BIG_BINARY)}`,
      '@="the default value"',
    ],
  ],
  ['Microsoft\\Windows\\CurrentVersion\\Run', []],
  ['Ключ', ['"Latin"="x"']],
  ['Many', []],
  ...MANY_SUBKEYS.map((k): [string, string[]] => [`Many\\${k}`, []]),
]);
const software = readFileSync(softwarePath);

const systemPath = buildHive('SYSTEM', [
  ['Select', ['"Current"=dword:00000001', '"Default"=dword:00000001', '"LastKnownGood"=dword:00000002']],
  ['ControlSet001\\Control', [`"Blob"=hex:${toRegHex(BIG_BINARY.subarray(0, 20_000))}`]],
  ['ControlSet001\\Control\\ComputerName\\ComputerName', ['"ComputerName"="WIN2012R2"']],
  ['ControlSet001\\Services\\viostor', ['"Start"=dword:00000000']],
  ['ControlSet001\\Services\\netkvm', ['"Start"=dword:00000003']],
  ['ControlSet001\\Services\\Tcpip', []],
]);

test('the empty hive from the harness is accepted by hivex and by RegistryHive', () => {
  const p = writeHive(emptyHive('CMI-CreateHive{TEST}'), 'empty');
  // hivexget lists the root's values (none) and exits 0 only when it could open the hive.
  assert.equal(execFileSync('hivexget', [p, '\\'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString(), '');
  const hive = RegistryHive.parse(readFileSync(p), 'empty');
  assert.deepEqual(hive.subkeys(''), []);
  assert.deepEqual(hive.subkeys('\\'), []);
  assert.equal(hive.subkeys('Microsoft'), null);
  assert.equal(hive.value('', 'anything'), null);
});

test('SOFTWARE: CurrentVersion values as libguestfs reads them', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.equal(hive.string(CURRENT_VERSION, 'ProductName'), 'Windows Server 2012 R2 Standard');
  assert.equal(hive.string(CURRENT_VERSION, 'CurrentVersion'), '6.3');
  assert.equal(hive.string(CURRENT_VERSION, 'CurrentBuildNumber'), '9600');
  assert.equal(hive.string(CURRENT_VERSION, 'InstallationType'), 'Server');
  assert.equal(hive.string(CURRENT_VERSION, 'EditionID'), 'ServerStandard');
  assert.equal(hive.dword(CURRENT_VERSION, 'CurrentMajorVersionNumber'), 10);
  assert.equal(hive.dword(CURRENT_VERSION, 'CurrentMinorVersionNumber'), 0);
  // Same answers as hivex's own reader.
  assert.equal(
    hivexget(softwarePath, CURRENT_VERSION, 'ProductName').toString().trim(),
    hive.string(CURRENT_VERSION, 'ProductName'),
  );
  assert.equal(
    hivexget(softwarePath, CURRENT_VERSION, 'CurrentBuildNumber').toString().trim(),
    hive.string(CURRENT_VERSION, 'CurrentBuildNumber'),
  );
});

test('lookups are case-insensitive and tolerate leading and trailing backslashes', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.equal(
    hive.string('\\MICROSOFT\\windows nt\\currentversion\\', 'productname'),
    'Windows Server 2012 R2 Standard',
  );
  assert.deepEqual(hive.subkeys('microsoft\\WINDOWS'), ['CurrentVersion']);
});

test('value types: expand_sz, multi_sz, qword, binary, empty, default', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.deepEqual(hive.value(CURRENT_VERSION, 'SystemRoot'), { type: 'expand_sz', data: '%SystemDrive%\\Windows' });
  assert.equal(hive.string(CURRENT_VERSION, 'SystemRoot'), '%SystemDrive%\\Windows');
  assert.deepEqual(hive.value(CURRENT_VERSION, 'Paths'), { type: 'multi_sz', data: ['C:\\One', 'D:\\Two'] });
  assert.deepEqual(hive.value(CURRENT_VERSION, 'InstallTime'), { type: 'qword', data: 0x01ba987654321000n });
  assert.deepEqual(hive.value(CURRENT_VERSION, 'Small'), { type: 'binary', data: Buffer.from([0xde, 0xad]) });
  assert.deepEqual(hive.value(CURRENT_VERSION, 'Empty'), { type: 'binary', data: Buffer.alloc(0) });
  assert.deepEqual(hive.value(CURRENT_VERSION, ''), { type: 'sz', data: 'the default value' });
  assert.deepEqual(hive.value(CURRENT_VERSION, 'CurrentVersion'), { type: 'sz', data: '6.3' });
  assert.deepEqual(hive.value(CURRENT_VERSION, 'CurrentMajorVersionNumber'), { type: 'dword', data: 10 });
});

test('absent keys and values, and values of the wrong type for the convenience getters, are null', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.equal(hive.subkeys('Microsoft\\Nope'), null);
  assert.equal(hive.value('Microsoft\\Nope', 'ProductName'), null);
  assert.equal(hive.value(CURRENT_VERSION, 'Nope'), null);
  assert.equal(hive.string(CURRENT_VERSION, 'CurrentMajorVersionNumber'), null);
  assert.equal(hive.dword(CURRENT_VERSION, 'ProductName'), null);
  assert.equal(hive.dword('Microsoft\\Nope', 'x'), null);
  assert.deepEqual(hive.subkeys('Microsoft\\Windows\\CurrentVersion\\Run'), []);
});

test('key names stored as UTF-16 are read', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.ok(hive.subkeys('')?.includes('Ключ'));
  assert.equal(hive.string('ключ', 'Latin'), 'x');
});

test('600 subkeys in one lh list, and the same split by an ri index into two lists', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.deepEqual(hive.subkeys('Many'), MANY_SUBKEYS);
  assert.deepEqual(hive.subkeys('Many\\driver0599'), []);

  const indexed = splitSubkeyListIntoIndexRoot(software, 'Many');
  const indexedPath = writeHive(indexed, 'ri');
  const fromIndex = RegistryHive.parse(indexed, 'SOFTWARE-ri');
  assert.deepEqual(fromIndex.subkeys('Many'), MANY_SUBKEYS);
  assert.deepEqual(fromIndex.subkeys('Many\\Driver0450'), []);
  // hivex reads the reshaped hive the same way.
  const hivexList = execFileSync('hivexsh', [indexedPath], {
    input: 'cd Many\nls\n',
    stdio: ['pipe', 'pipe', 'pipe'],
  }).toString();
  assert.deepEqual(hivexList.trim().split('\n'), MANY_SUBKEYS);
});

test('ri indexes over li and lf leaf lists', () => {
  for (const leafType of ['li', 'lf'] as const) {
    const hive = RegistryHive.parse(splitSubkeyListIntoIndexRoot(software, 'Many', leafType), `SOFTWARE-${leafType}`);
    assert.deepEqual(hive.subkeys('Many'), MANY_SUBKEYS, leafType);
    assert.deepEqual(hive.subkeys('many\\driver0123'), [], leafType);
  }
});

test('a value over 16344 bytes, in one cell (hivex) and as db big data (Windows)', () => {
  const hive = RegistryHive.parse(software, 'SOFTWARE');
  assert.deepEqual(hive.value(CURRENT_VERSION, 'BigBlob'), { type: 'binary', data: BIG_BINARY });

  const bigData = moveValueToBigData(software, 'BigBlob');
  const bigDataPath = writeHive(bigData, 'db');
  const fromBigData = RegistryHive.parse(bigData, 'SOFTWARE-db');
  assert.deepEqual(fromBigData.value(CURRENT_VERSION, 'BigBlob'), { type: 'binary', data: BIG_BINARY });
  assert.deepEqual(hivexget(bigDataPath, CURRENT_VERSION, 'BigBlob'), BIG_BINARY);
});

test('SYSTEM: current control set, computer name and virtio services', () => {
  const hive = RegistryHive.parse(readFileSync(systemPath), 'SYSTEM');
  const current = hive.dword('Select', 'Current');
  assert.equal(current, 1);
  const controlSet = `ControlSet${String(current).padStart(3, '0')}`;
  assert.equal(hive.string(`${controlSet}\\Control\\ComputerName\\ComputerName`, 'ComputerName'), 'WIN2012R2');
  assert.equal(
    hivexget(systemPath, `${controlSet}\\Control\\ComputerName\\ComputerName`, 'ComputerName').toString().trim(),
    'WIN2012R2',
  );
  const services = hive.subkeys(`${controlSet}\\Services`) ?? [];
  assert.deepEqual([...services].sort(), ['netkvm', 'Tcpip', 'viostor'].sort());
  assert.equal(hive.dword(`${controlSet}\\Services\\VIOSTOR`, 'Start'), 0);
  assert.equal(hive.subkeys('ControlSet002\\Services'), null);
});

test('a buffer that is not a hive is FILESYSTEM_UNREADABLE', () => {
  assertUnreadable(() => RegistryHive.parse(Buffer.alloc(16384), 'zeros'));
  assertUnreadable(() => RegistryHive.parse(Buffer.from('regf'), 'tiny'));
  const noHbin = Buffer.from(software);
  noHbin.write('xxxx', 4096, 'latin1');
  assertUnreadable(() => RegistryHive.parse(noHbin, 'no hbin'));
});

test('a bad base block checksum is FILESYSTEM_UNREADABLE', () => {
  const damaged = Buffer.from(software);
  damaged.writeUInt32LE(damaged.readUInt32LE(508) ^ 1, 508);
  assertUnreadable(() => RegistryHive.parse(damaged, 'bad checksum'));
  const changedField = Buffer.from(software);
  changedField.writeUInt32LE(changedField.readUInt32LE(4) + 1, 4);
  assertUnreadable(() => RegistryHive.parse(changedField, 'changed sequence'));
});

/** A copy of the SOFTWARE hive with the first subkey list entry of `keyName` set to `target`. */
function withFirstSubkeyEntry(keyName: string, target: (nkOffset: number) => number): Buffer {
  const damaged = Buffer.from(software);
  const nkOffset = keyCellOffset(damaged, keyName);
  const listOffset = damaged.readUInt32LE(4096 + nkOffset + 4 + 28);
  damaged.writeUInt32LE(target(nkOffset), 4096 + listOffset + 4 + 4);
  return damaged;
}

test('a subkey list entry pointing outside the file is FILESYSTEM_UNREADABLE on access', () => {
  const damaged = withFirstSubkeyEntry('Many', () => 0x7fff_fff0);
  const hive = RegistryHive.parse(damaged, 'SOFTWARE');
  // Unrelated keys still read.
  assert.equal(hive.string(CURRENT_VERSION, 'ProductName'), 'Windows Server 2012 R2 Standard');
  assertUnreadable(() => hive.subkeys('Many'));
  assertUnreadable(() => hive.subkeys('Many\\Driver0001'));
  const misaligned = RegistryHive.parse(
    withFirstSubkeyEntry('Many', () => 0x21),
    'SOFTWARE',
  );
  assertUnreadable(() => misaligned.subkeys('Many'));
});

test('a subkey list pointing at its own key does not hang', () => {
  const damaged = withFirstSubkeyEntry('Many', (nk) => nk);
  const hive = RegistryHive.parse(damaged, 'SOFTWARE');
  const names = hive.subkeys('Many');
  assert.equal(names?.[0], 'Many');
  assertUnreadable(() => hive.subkeys('Many\\Many'));
  assertUnreadable(() => hive.value('Many\\Many\\Many\\Many', 'x'));
});

test('an ri index listing itself does not hang', () => {
  const indexed = splitSubkeyListIntoIndexRoot(software, 'Many');
  const nk = keyCellOffset(indexed, 'Many');
  const ri = indexed.readUInt32LE(4096 + nk + 4 + 28);
  indexed.writeUInt32LE(ri, 4096 + ri + 4 + 4); // first entry of the ri: the ri itself
  const hive = RegistryHive.parse(indexed, 'SOFTWARE-ri-loop');
  assertUnreadable(() => hive.subkeys('Many'));
});

test('a value list overrunning its cell is FILESYSTEM_UNREADABLE', () => {
  const damaged = readFileSync(systemPath);
  const nk = 4096 + keyCellOffset(damaged, 'Select') + 4;
  damaged.writeUInt32LE(1_000_000, nk + 36); // value count far beyond the value list cell
  const hive = RegistryHive.parse(damaged, 'SYSTEM');
  assertUnreadable(() => hive.dword('Select', 'Current'));
  assert.deepEqual(hive.subkeys('ControlSet001'), ['Control', 'Services']);
});

test('random damage inside cells gives answers or FILESYSTEM_UNREADABLE, never another error', () => {
  // The small SYSTEM hive, with one value as big data, keeps a full walk per round cheap.
  const original = moveValueToBigData(readFileSync(systemPath), 'Blob');
  const cells = hiveCells(original).filter((c) => c.data.length < 1024);
  let seed = 0x5eed;
  const random = (below: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % below;
  };
  const readEverything = (hive: RegistryHive, path: string, depth: number): void => {
    for (const name of hive.subkeys(path) ?? [])
      if (depth < 8) readEverything(hive, path === '' ? name : `${path}\\${name}`, depth + 1);
    for (const name of ['Blob', 'Current', 'ComputerName', 'Start', '']) hive.value(path, name);
  };
  for (let round = 0; round < 2000; round++) {
    const damaged = Buffer.from(original);
    const cell = cells[random(cells.length)];
    assert.ok(cell !== undefined);
    const at = 4096 + cell.offset + random(Math.min(cell.data.length + 4, 96) - 3);
    damaged.writeUInt32LE(random(2) === 0 ? random(0x1_0000_0000) : damaged.readUInt32LE(at) ^ (1 << random(32)), at);
    try {
      readEverything(RegistryHive.parse(damaged, 'fuzzed'), '', 0);
    } catch (e) {
      assert.ok(isMamoriError(e, 'FILESYSTEM_UNREADABLE'), `round ${round}: ${String(e)}`);
    }
  }
});
