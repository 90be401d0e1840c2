import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { SiteProcess } from './site-process.js';

/**
 * One count read straight from a site's database, whichever it is (PostgreSQL when the site
 * serves with --db, else mamori.db in its data folder): for the checks a test makes below the
 * API, such as "cleanup left no replica holds". `sql` is a plain SELECT of one value named n;
 * it runs read-only on SQLite and in a read-only transaction on PostgreSQL.
 */
export async function siteCount(site: SiteProcess, sql: string): Promise<number> {
  if (site.db) {
    const client = new pg.Client({ connectionString: site.db });
    await client.connect();
    try {
      await client.query('BEGIN READ ONLY');
      const row = (await client.query<{ n: string | number }>(sql)).rows[0];
      await client.query('ROLLBACK');
      return Number(row?.n);
    } finally {
      await client.end();
    }
  }
  const db = new Database(join(site.dataDir, 'mamori.db'), { readonly: true, fileMustExist: true });
  try {
    return Number((db.prepare(sql).get() as { n: number | bigint } | undefined)?.n);
  } finally {
    db.close();
  }
}
