import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertPrivateDataDir } from '../../../src/core/data-dir-modes.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

test('a private folder passes (also through a symlink); an open one or an open secret file is refused with the chmod to run', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-modes-'));
  try {
    const data = join(dir, 'data');
    await mkdir(data, { mode: 0o700 });
    await chmod(data, 0o700);
    const db = join(data, 'mamori.db');
    await writeFile(db, 'x', { mode: 0o600 });
    await chmod(db, 0o600);
    await assertPrivateDataDir(data, [db, join(data, 'absent')]);
    await symlink(data, join(dir, 'link'));
    await assertPrivateDataDir(join(dir, 'link'), []);
    await assertPrivateDataDir(join(dir, 'not-made-yet'), []);

    await chmod(data, 0o750);
    await chmod(db, 0o640);
    await assert.rejects(assertPrivateDataDir(data, [db]), (e: unknown) => {
      assert.ok(isMamoriError(e, 'DATA_DIR_UNSAFE'));
      assert.ok(e.message.endsWith(`Run: chmod 700 ${data} && chmod 600 ${db}`), e.message);
      assert.match(e.message, /mode 750/);
      return true;
    });
    await chmod(data, 0o700);
    const odd = join(data, "it's secret");
    await writeFile(odd, 'x');
    await chmod(odd, 0o604);
    await assert.rejects(
      assertPrivateDataDir(data, [odd]),
      (e: unknown) =>
        isMamoriError(e, 'DATA_DIR_UNSAFE') && e.message.endsWith(`Run: chmod 600 '${data}/it'\\''s secret'`),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
