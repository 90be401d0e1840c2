import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { MIGRATIONS, migrationSql, SQLITE_MIGRATION_DIALECT } from '../../../src/store/migrations.js';
import { openSqliteStore } from '../../../src/store/sqlite/open-sqlite-store.js';
import { VmRepo } from '../../../src/store/repos/vm-repo.js';
import { DiskRepo } from '../../../src/store/repos/disk-repo.js';
import { describeEachDialect } from '../../harness/store-dialects.js';
import { SCHEMA_STEPS_BEFORE_POSTGRES } from './schema-before-postgres.js';
import type { Store } from '../../../src/store/store.js';

type Db = Store['db'];

/** A raw VM row (the schema is what is tested here, not the definition's shape). */
async function insertVmRow(db: Db): Promise<void> {
  await db
    .insertInto('vms')
    .values({
      id: 'vm1',
      name: 'a',
      definition: '{}',
      state: 'stopped',
      state_reason: null,
      pid: null,
      last_heartbeat_at: null,
      created_at: 't',
      updated_at: 't',
    })
    .execute();
}

/** A raw disk row of vm1. */
async function insertDiskRow(db: Db, over: { size_bytes: number; shared: number; owned_by_vm: number }): Promise<void> {
  await db
    .insertInto('disks')
    .values({
      id: 'd1',
      name: 'd',
      pool: 'p',
      kind: 'file',
      format: 'qcow2',
      path: '/x',
      rdm_mode: null,
      vm_id: 'vm1',
      created_at: 't',
      ...over,
    })
    .execute();
}

/** Every table src/store/schema.ts declares. */
const TABLES = [
  'meta',
  'tokens',
  'vms',
  'disks',
  'jobs',
  'snapshots',
  'peers',
  'replications',
  'replicas',
  'replica_points',
  'events',
  'protection_groups',
  'protection_group_vms',
  'networks',
  'inventory_mappings',
  'plans',
  'plan_runs',
  'replica_holds',
  'recovered_vms',
  'superseded_vms',
  'incoming_migrations',
  'desktop_pools',
  'pool_replicas',
  'pool_desktops',
  'pool_addresses',
  'storage_arrays',
  'alert_deliveries',
  'audit_log',
  'schema_version',
].sort();

describeEachDialect('migrations', (f) => {
  test('a new database gets every table at the newest version; opening it again changes nothing', async () => {
    const store = await f.open();
    const tables =
      f.dialect === 'sqlite'
        ? (await sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table'`.execute(store.db)).rows.map(
            (r) => r.name,
          )
        : (
            await sql<{
              name: string;
            }>`SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'`.execute(store.db)
          ).rows.map((r) => r.name);
    assert.deepEqual(tables.sort(), TABLES);
    const version = async (db = store.db): Promise<number> =>
      (await db.selectFrom('schema_version').select('version').execute()).map((r) => r.version)[0]!;
    assert.equal(await version(), MIGRATIONS.length);
    await store.close();
    const again = await f.reopen();
    assert.equal(await version(again.db), MIGRATIONS.length);
    assert.equal((await again.db.selectFrom('schema_version').selectAll().execute()).length, 1, 'one version row');
  });

  test('two servers opening one new database at once both come up on one schema', async () => {
    const first = await f.open();
    await first.close();
    const [a, b] = await Promise.all([f.reopen(), f.reopen()]);
    assert.equal((await a.db.selectFrom('schema_version').selectAll().execute()).length, 1);
    assert.deepEqual(await b.db.selectFrom('vms').selectAll().execute(), []);
  });

  test('whole numbers past 2^31 and fractions read back as numbers, as written', async () => {
    const { db } = await f.open();
    await insertVmRow(db);
    await insertDiskRow(db, { size_bytes: 2 ** 42 + 1, shared: 1, owned_by_vm: 0 });
    await db
      .insertInto('jobs')
      .values({
        id: 'j1',
        kind: 'k',
        state: 's',
        target: null,
        steps: '[]',
        progress: 0.123456789,
        result: null,
        error: null,
        created_at: 't',
        updated_at: 't',
      })
      .execute();
    const d = await db.selectFrom('disks').select(['size_bytes', 'shared', 'owned_by_vm']).executeTakeFirstOrThrow();
    assert.deepEqual(d, { size_bytes: 2 ** 42 + 1, shared: 1, owned_by_vm: 0 });
    assert.equal((await db.selectFrom('jobs').select('progress').executeTakeFirstOrThrow()).progress, 0.123456789);
    const n = await db
      .selectFrom('disks')
      .select((eb) => [eb.fn.countAll().as('n'), eb.fn.sum('size_bytes').as('total')])
      .executeTakeFirstOrThrow();
    assert.deepEqual({ n: Number(n.n), total: n.total }, { n: 1, total: 2 ** 42 + 1 });
    assert.equal(typeof n.total, 'number');
  });

  test('text sorts bytewise on both, whatever locale the database was made with', async () => {
    const store = await f.open();
    if (f.dialect === 'postgres') {
      const other = await sql<{
        table_name: string;
        column_name: string;
        collation_name: string | null;
      }>`SELECT table_name, column_name, collation_name
        FROM information_schema.columns WHERE table_schema = 'public' AND data_type = 'text' AND collation_name IS DISTINCT FROM 'C'`.execute(
        store.db,
      );
      assert.deepEqual(other.rows, [], 'every text column collates as "C"');
    }
    for (const [i, name] of ['b', 'B', 'a-2', 'a_1', 'a', 'é', 'Z'].entries()) {
      await store.db
        .insertInto('networks')
        .values({ name, kind: 'isolated', bridge: `br${i}`, created_at: 't' })
        .execute();
    }
    const names = (await store.db.selectFrom('networks').select('name').orderBy('name').execute()).map((r) => r.name);
    assert.deepEqual(names, ['B', 'Z', 'a', 'a-2', 'a_1', 'b', 'é']);
  });

  test('the audit log refuses updates and deletes', async () => {
    const { db } = await f.open();
    await db
      .insertInto('audit_log')
      .values({
        seq: 0,
        at: 't',
        token_id: null,
        role: null,
        source: 's',
        method: 'POST',
        route: '/x',
        target: null,
        status: 200,
        error_code: null,
        request_id: null,
        prev_hash: '',
        hash: 'h',
      })
      .execute();
    await assert.rejects(db.updateTable('audit_log').set({ status: 500 }).execute(), /append-only/);
    await assert.rejects(db.deleteFrom('audit_log').execute(), /append-only/);
    if (f.dialect === 'postgres') await assert.rejects(sql`TRUNCATE audit_log`.execute(db), /append-only/);
    assert.equal((await db.selectFrom('audit_log').select('status').executeTakeFirstOrThrow()).status, 200);
  });

  test('foreign keys hold: ON DELETE SET NULL and CASCADE act, a dangling reference is refused', async () => {
    const { db } = await f.open();
    await insertVmRow(db);
    await insertDiskRow(db, { size_bytes: 1, shared: 0, owned_by_vm: 1 });
    await db
      .insertInto('snapshots')
      .values({ id: 's1', vm_id: 'vm1', name: 'snap', created_at: 't', running: 0 })
      .execute();
    await assert.rejects(
      db
        .insertInto('snapshots')
        .values({ id: 's2', vm_id: 'nope', name: 'snap', created_at: 't', running: 0 })
        .execute(),
    );
    await db.deleteFrom('vms').execute();
    assert.equal((await db.selectFrom('disks').select('vm_id').executeTakeFirstOrThrow()).vm_id, null);
    assert.deepEqual(await db.selectFrom('snapshots').selectAll().execute(), []);
  });
});

/** A SQLite file made by the code before PostgreSQL support, stopped after `steps` of its steps. */
function oldDatabase(file: string, steps: number): BetterSqlite3.Database {
  const raw = new BetterSqlite3(file);
  raw.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  raw.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
  for (let v = 0; v < steps; v += 1) {
    raw.transaction(() => {
      raw.exec(SCHEMA_STEPS_BEFORE_POSTGRES[v]!);
      raw.prepare('UPDATE schema_version SET version = ?').run(v + 1);
    })();
  }
  return raw;
}

function schemaOf(raw: BetterSqlite3.Database): string[] {
  return (
    raw
      .prepare("SELECT type || ' ' || name || ': ' || coalesce(sql, '') AS s FROM sqlite_master ORDER BY type, name")
      .all() as { s: string }[]
  ).map((r) => r.s);
}

test('on SQLite the steps are, character for character, those of the code before PostgreSQL support', () => {
  const now = migrationSql(SQLITE_MIGRATION_DIALECT);
  assert.ok(now.length >= SCHEMA_STEPS_BEFORE_POSTGRES.length);
  SCHEMA_STEPS_BEFORE_POSTGRES.forEach((text, i) => assert.equal(now[i], text, `step ${i + 1}`));
});

test('a new SQLite database has every table, index and trigger of one made by the old code and upgraded, as declared', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-store-'));
  try {
    // Made by the old code, then opened (so upgraded) by this one: the same schema, text for text,
    // as a database this code makes new (SQLite keeps each table's CREATE text, altered in place).
    oldDatabase(join(dir, 'old.db'), SCHEMA_STEPS_BEFORE_POSTGRES.length).close();
    await (await openSqliteStore(join(dir, 'old.db'))).close();
    const store = await openSqliteStore(join(dir, 'new.db'));
    await store.close();
    const fresh = new BetterSqlite3(join(dir, 'new.db'));
    const old = new BetterSqlite3(join(dir, 'old.db'));
    const now = new Set(schemaOf(fresh));
    for (const entry of schemaOf(old)) assert.ok(now.has(entry), entry);
    assert.equal(schemaOf(old).length, now.size);
    fresh.close();
    old.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a SQLite database made by the old code, at any version, opens, upgrades and keeps its rows', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-store-'));
  try {
    for (const steps of [1, 8, SCHEMA_STEPS_BEFORE_POSTGRES.length]) {
      const file = join(dir, `v${steps}.db`);
      const raw = oldDatabase(file, steps);
      // A definition as every version has written it (the codec validates what it reads back).
      const definition = {
        id: 'vm1',
        name: 'web',
        vcpus: 1,
        memoryMiB: 64,
        firmware: 'bios',
        machineType: 'pc-q35-7.2',
        diskIds: [],
        nics: [],
        boot: { kind: 'disk' },
        stopTimeoutSec: 10,
      };
      raw
        .prepare('INSERT INTO vms (id, name, definition, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run('vm1', 'web', JSON.stringify(definition), 'stopped', 't0', 't0');
      raw
        .prepare(
          'INSERT INTO disks (id, name, pool, kind, format, path, size_bytes, vm_id, owned_by_vm, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run('d1', 'web-disk0', 'default', 'file', 'qcow2', '/p/web.qcow2', 2 ** 40, 'vm1', 1, 't0');
      raw.close();
      const store = await openSqliteStore(file);
      try {
        assert.equal(
          (await store.db.selectFrom('schema_version').select('version').executeTakeFirstOrThrow()).version,
          MIGRATIONS.length,
          `from version ${steps}`,
        );
        assert.equal((await new VmRepo(store.handle).findByName('web'))?.definition.name, 'web');
        const disk = await new DiskRepo(store.handle).findByName('web-disk0');
        assert.deepEqual([disk?.sizeBytes, disk?.ownedByVm, disk?.overlays], [2 ** 40, true, []]);
      } finally {
        await store.close();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
