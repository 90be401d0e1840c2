import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDatabaseUrl } from '../../../src/store/postgres/database-url.js';
import { MamoriError } from '../../../src/core/mamori-error.js';

test('a PostgreSQL URL is taken as given and shown with its password and query masked', () => {
  const u = parseDatabaseUrl('postgresql://mamori:s3cret@db.example:5433/site_a?sslmode=require');
  assert.deepEqual(u, {
    url: 'postgresql://mamori:s3cret@db.example:5433/site_a?sslmode=require',
    shown: 'postgresql://***@db.example:5433/site_a?sslmode=***',
    database: 'site_a',
  });
  assert.equal(parseDatabaseUrl('postgres://mamori@localhost/m').database, 'm');
  assert.equal(parseDatabaseUrl('postgresql://mamori@localhost/m?host=%2Frun%2Fpostgresql').database, 'm');
});

test('anything else is INVALID_INPUT naming what to write, and never shows the password', () => {
  for (const [text, says] of [
    ['mysql://root:s3cret@db/m', /only PostgreSQL URLs/],
    ['postgresql://root:s3cret@db', /name the database/],
    ['postgresql://root:s3cret@db/', /name the database/],
    ['postgresql://root:s3cret@db/a/b', /name the database/],
    ['not a url s3cret', /not a URL/],
    ['postgresql://root:s3cret@db:port/m', /not a URL/],
    ['postgresql:///m', /name the server/],
  ] as const) {
    assert.throws(
      () => parseDatabaseUrl(text),
      (e: unknown) => {
        assert.ok(e instanceof MamoriError && e.code === 'INVALID_INPUT', text);
        assert.match(e.message, says, text);
        assert.ok(!e.message.includes('s3cret'), e.message);
        return true;
      },
    );
  }
});
