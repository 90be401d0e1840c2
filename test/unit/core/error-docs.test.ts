import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ERROR_CODES } from '../../../src/core/error-codes.js';
import { repoRoot } from '../../harness/repo-root.js';

test('docs/errors.md lists every error code with its HTTP status, and no others', async () => {
  const doc = await readFile(join(repoRoot, 'docs', 'errors.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \| (yes|no) \|/gm)].map((m) => ({
    code: m[1]!,
    status: Number(m[2]),
    retryable: m[3] === 'yes',
  }));
  const documented = new Map(rows.map((r) => [r.code, r]));
  for (const [code, meta] of Object.entries(ERROR_CODES)) {
    const row = documented.get(code);
    assert.ok(row, `${code} is missing from docs/errors.md`);
    assert.equal(row.status, meta.httpStatus, `${code}: HTTP status differs between registry and docs`);
    assert.equal(row.retryable, meta.retryable, `${code}: retryable differs between registry and docs`);
  }
  for (const r of rows)
    assert.ok(r.code in ERROR_CODES, `docs/errors.md lists ${r.code}, which the registry does not have`);
});
