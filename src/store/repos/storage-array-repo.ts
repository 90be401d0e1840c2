import type { Kysely, Selectable } from 'kysely';
import type { Database, StorageArrayTable } from '../schema.js';
import { unwrapStoreHandle, type StoreHandle } from '../store-handle.js';
import { isSealed, type SecretBox } from '../../core/secret-box.js';
import { jsonColumn } from '../json-column.js';

/** The AAD of an entry's connection: bound to the entry's name. */
export const connectionPurpose = (name: string): string => `storage_arrays.connection:${name}`;

/** storage_arrays.connection (once opened): the connection parameters' values. */
export const arrayConnectionColumn = jsonColumn<Record<string, string>>('storage_arrays.connection', {
  type: 'object',
  additionalProperties: { type: 'string' },
});

/** A storage adapter with its connection, the connection opened. */
export interface StorageArrayRecord {
  name: string;
  adapter: string;
  connection: Record<string, string>;
  createdAt: string;
}

/**
 * The storage_arrays table. The connection (passwords among its values) is kept sealed as a
 * whole with DATA/secret.key, bound to the entry's name.
 */
export class StorageArrayRepo {
  #db: Kysely<Database>;
  #box: SecretBox;
  constructor(db: StoreHandle, box: SecretBox) {
    this.#db = unwrapStoreHandle(db);
    this.#box = box;
  }

  async exists(name: string): Promise<boolean> {
    return (
      (await this.#db.selectFrom('storage_arrays').select('name').where('name', '=', name).executeTakeFirst()) !==
      undefined
    );
  }

  async insert(r: StorageArrayRecord): Promise<void> {
    await this.#db
      .insertInto('storage_arrays')
      .values({
        name: r.name,
        adapter: r.adapter,
        connection: this.#box.seal(connectionPurpose(r.name), arrayConnectionColumn.encode(r.connection)),
        created_at: r.createdAt,
      })
      .execute();
  }

  /** By name. */
  async list(): Promise<StorageArrayRecord[]> {
    return (await this.#db.selectFrom('storage_arrays').selectAll().orderBy('name').execute()).map((r) =>
      this.#toRecord(r),
    );
  }

  async find(name: string): Promise<StorageArrayRecord | undefined> {
    const r = await this.#db.selectFrom('storage_arrays').selectAll().where('name', '=', name).executeTakeFirst();
    return r && this.#toRecord(r);
  }

  /** True when an entry was deleted. */
  async delete(name: string): Promise<boolean> {
    const r = await this.#db.deleteFrom('storage_arrays').where('name', '=', name).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Upgrade: seals connections stored in clear before sealing; returns how many. */
  async sealClearConnections(): Promise<number> {
    let n = 0;
    for (const r of await this.#db.selectFrom('storage_arrays').select(['name', 'connection']).execute()) {
      if (isSealed(r.connection)) continue;
      await this.#db
        .updateTable('storage_arrays')
        .set({ connection: this.#box.seal(connectionPurpose(r.name), r.connection) })
        .where('name', '=', r.name)
        .execute();
      n += 1;
    }
    return n;
  }

  #toRecord(r: Selectable<StorageArrayTable>): StorageArrayRecord {
    return {
      name: r.name,
      adapter: r.adapter,
      connection: arrayConnectionColumn.decode(this.#box.openOrClear(connectionPurpose(r.name), r.connection)),
      createdAt: r.created_at,
    };
  }
}
