import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { bufferReader } from '../../../src/inspect/byte-reader.js';
import { inspectDisk } from '../../../src/inspect/inspector.js';
import { compatibilityWarnings, conversionBlockers } from '../../../src/convert/compatibility.js';

/*
 * The dynamic-disk blocker over real partition tables written by sfdisk: Windows' LDM keeps
 * its volumes in a database the partition table does not describe, so such a disk converts
 * into a VM whose volumes are unreadable. MBR type 0x42, or GPT's LDM metadata and data
 * partition types, must block; a basic disk of the same shape must not.
 */
describe('the compatibility report over sfdisk-made disks', () => {
  let dir: string;
  const disk = async (name: string, script: string): Promise<Buffer> => {
    const path = join(dir, name);
    await writeFile(path, '');
    await truncate(path, 8 * 1024 * 1024);
    await runProcess('sfdisk', ['-q', path], { input: script, timeoutMs: 30_000 });
    return readFile(path);
  };
  const blockersOf = async (img: Buffer): Promise<string[]> => conversionBlockers(await inspectDisk(bufferReader(img)));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-compat-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const LDM = /^it is a Windows dynamic disk \(LDM\): convert its volumes to basic disks in Windows first$/;

  it('blocks an MBR dynamic disk (partition type 0x42)', async () => {
    const b = await blockersOf(await disk('mbr-ldm.img', 'label: dos\nstart=2048, type=42\n'));
    assert.equal(b.length, 1, JSON.stringify(b));
    assert.match(b[0]!, LDM);
  });

  it('blocks a GPT dynamic disk (LDM metadata partition), and one with only an LDM data partition', async () => {
    const both = await disk(
      'gpt-ldm.img',
      'label: gpt\nstart=2048, size=2048, type=5808C8AA-7E8F-42E0-85D2-E1E90434CFB3\nstart=4096, type=AF9B60A0-1431-4F62-BC68-3311714A69AD\n',
    );
    assert.match((await blockersOf(both)).join('\n'), LDM);
    const dataOnly = await disk(
      'gpt-ldm-data.img',
      'label: gpt\nstart=2048, type=AF9B60A0-1431-4F62-BC68-3311714A69AD\n',
    );
    assert.match((await blockersOf(dataOnly)).join('\n'), LDM);
  });

  it('does not block a basic disk of the same shape (NTFS type 0x07, GPT basic data); it only warns that no OS was found', async () => {
    const mbr = await inspectDisk(bufferReader(await disk('mbr-basic.img', 'label: dos\nstart=2048, type=7\n')));
    assert.deepEqual(conversionBlockers(mbr), []);
    assert.ok(compatibilityWarnings(mbr).some((w) => /no guest operating system was found/.test(w)));
    const gpt = await inspectDisk(
      bufferReader(await disk('gpt-basic.img', 'label: gpt\nstart=2048, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n')),
    );
    assert.deepEqual(conversionBlockers(gpt), []);
  });

  it('blocks a disk with neither partition table nor filesystem', async () => {
    assert.match(
      (await blockersOf(Buffer.alloc(1024 * 1024))).join('\n'),
      /holds no partition table and no filesystem/,
    );
  });
});
