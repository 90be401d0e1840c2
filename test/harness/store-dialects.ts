import { after, afterEach, before, describe } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Store, StoreDialect } from '../../src/store/store.js';
import { openStore, type StoreLocation } from '../../src/store/open-store.js';
import { PgCluster } from './pg-cluster.js';

export const STORE_DIALECTS: readonly StoreDialect[] = ['sqlite', 'postgres'];

/** What a store test gets, the same on either dialect. */
export interface StoreFixture {
  dialect: StoreDialect;
  /** A store on a new, empty database; closed after the test. */
  open(): Promise<Store>;
  /** Another store on the database of the last open() (a second server, or a restart). */
  reopen(): Promise<Store>;
  /** Where the last open() put its database (SQLite file or PostgreSQL URL). */
  location(): StoreLocation;
  /** The PostgreSQL cluster (postgres only). */
  cluster(): PgCluster;
}

/**
 * Declares the suite once per dialect: `title (sqlite)` and `title (postgres)`. The PostgreSQL
 * suite runs a throwaway cluster (test/harness/pg-cluster.ts) for its tests, each test on a
 * database of its own; the SQLite one a file in a temporary folder. Both are removed after.
 */
export function describeEachDialect(title: string, body: (f: StoreFixture) => void): void {
  for (const dialect of STORE_DIALECTS) {
    describe(`${title} (${dialect})`, () => {
      let dir = '';
      let pg: PgCluster | null = null;
      let last: StoreLocation | null = null;
      let files = 0;
      const opened: Store[] = [];
      before(async () => {
        dir = await mkdtemp(join(tmpdir(), 'mamori-store-'));
        if (dialect === 'postgres') pg = await PgCluster.start();
      });
      after(async () => {
        await pg?.stop();
        await rm(dir, { recursive: true, force: true });
      });
      afterEach(async () => {
        for (const s of opened.splice(0)) await s.close();
      });
      const track = (s: Store): Store => {
        // A test may close its store itself: closing twice is not an error here.
        let closed: Promise<void> | null = null;
        const store: Store = { handle: s.handle, db: s.db, dialect: s.dialect, close: () => (closed ??= s.close()) };
        opened.push(store);
        return store;
      };
      body({
        dialect,
        async open() {
          files += 1;
          last = {
            sqliteFile: join(dir, `site-${files}.db`),
            ...(pg ? { postgresUrl: await pg.createDatabase() } : {}),
          };
          return track(await openStore(last));
        },
        async reopen() {
          if (!last) throw new Error('store-dialects: reopen() before open()');
          return track(await openStore(last));
        },
        location() {
          if (!last) throw new Error('store-dialects: location() before open()');
          return last;
        },
        cluster() {
          if (!pg) throw new Error('store-dialects: no cluster on sqlite');
          return pg;
        },
      });
    });
  }
}
