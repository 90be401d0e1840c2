import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { MamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import { AdapterClient } from './adapter-client.js';
import { adapterPath } from './bundled-adapters.js';
import type { AdapterResults } from './adapter-protocol.js';
import { checkCompat, readCompatGuide, type CompatVerdict } from './compat-guide.js';

export interface StorageArrayView {
  name: string;
  adapter: string;
  /** Connection values, secrets shown as `***`. */
  connection: Record<string, string>;
  arrays: AdapterResults['discoverArrays']['arrays'];
  createdAt: string;
}

export interface CompatReportRow {
  storage: string;
  adapter: string;
  adapterVersion: string;
  arrayId: string;
  model: string;
  softwareVersion: string;
  supported: boolean;
  reason: string;
}

/**
 * The storage this site reaches through adapters (SRM's array managers): each entry is an
 * adapter and a connection; the arrays it discovers are this site's. An entry is kept only
 * if the adapter answers with it, so a wrong password or a missing parameter is found when
 * it is added, not during a failover.
 */
export class StorageArrays {
  #db: Kysely<Database>;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async add(input: { name: string; adapter: string; connection: Record<string, string> }): Promise<StorageArrayView> {
    assertValidName('storage array', input.name);
    if (typeof input.adapter !== 'string' || input.adapter === '') throw new MamoriError('INVALID_INPUT', 'give the adapter: a bundled one by name (zfs) or the path of an executable');
    const connection = input.connection ?? {};
    if (typeof connection !== 'object' || Object.values(connection).some((v) => typeof v !== 'string')) throw new MamoriError('INVALID_INPUT', 'connection values must be strings (KEY=VALUE)');
    if (await this.#db.selectFrom('storage_arrays').select('name').where('name', '=', input.name).executeTakeFirst()) {
      throw new MamoriError('INVALID_INPUT', `a storage array entry named ${input.name} exists; remove it first or pick another name`);
    }
    const client = new AdapterClient(adapterPath(input.adapter), connection);
    const params = (await client.call('queryConnectionParameters', {})).parameters;
    const missing = params.filter((p) => p.required && !(p.name in connection)).map((p) => p.name);
    if (missing.length > 0) throw new MamoriError('INVALID_INPUT', `the ${input.adapter} adapter needs connection parameters ${missing.join(', ')} (--connection KEY=VALUE)`, { details: { missing } });
    const unknown = Object.keys(connection).filter((k) => !params.some((p) => p.name === k));
    if (unknown.length > 0) throw new MamoriError('INVALID_INPUT', `the ${input.adapter} adapter takes no connection parameter ${unknown.join(', ')}; it takes ${params.map((p) => p.name).join(', ') || 'none'}`);
    const arrays = (await client.call('discoverArrays', {})).arrays;
    if (arrays.length === 0) throw new MamoriError('INVALID_INPUT', `the ${input.adapter} adapter finds no array with that connection`);
    const now = new Date().toISOString();
    await this.#db.insertInto('storage_arrays').values({ name: input.name, adapter: input.adapter, connection: JSON.stringify(connection), created_at: now }).execute();
    return { name: input.name, adapter: input.adapter, connection: masked(params, connection), arrays, createdAt: now };
  }

  async list(): Promise<Omit<StorageArrayView, 'arrays'>[]> {
    const rows = await this.#db.selectFrom('storage_arrays').selectAll().orderBy('name').execute();
    return Promise.all(rows.map(async (r) => {
      const connection = JSON.parse(r.connection) as Record<string, string>;
      // Which values are secret is the adapter's to say; one it cannot answer gets all masked.
      const params = await clientOf(r).call('queryConnectionParameters', {}).then((q) => q.parameters, () => null);
      return { name: r.name, adapter: r.adapter, connection: params ? masked(params, connection) : maskAll(connection), createdAt: r.created_at };
    }));
  }

  async remove(name: string): Promise<void> {
    const r = await this.#db.deleteFrom('storage_arrays').where('name', '=', name).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw new MamoriError('NOT_FOUND', `no storage array entry named ${name}; see 'mamori array list'`);
  }

  /** The adapter client of an entry. */
  async client(name: string): Promise<AdapterClient> {
    const r = await this.#db.selectFrom('storage_arrays').selectAll().where('name', '=', name).executeTakeFirst();
    if (!r) throw new MamoriError('NOT_FOUND', `no storage array entry named ${name}; see 'mamori array list'`);
    return clientOf(r);
  }

  async devices(name: string): Promise<{ arrayId: string; devices: AdapterResults['discoverDevices']['devices'] }[]> {
    const client = await this.client(name);
    const out = [];
    for (const a of (await client.call('discoverArrays', {})).arrays) out.push({ arrayId: a.id, devices: (await client.call('discoverDevices', { arrayId: a.id })).devices });
    return out;
  }

  /** `mamori compat check`: every array of every entry against the compatibility guide. */
  async compatCheck(guideFile?: string): Promise<CompatReportRow[]> {
    const guide = await readCompatGuide(guideFile);
    const rows: CompatReportRow[] = [];
    for (const entry of await this.#db.selectFrom('storage_arrays').selectAll().orderBy('name').execute()) {
      const client = clientOf(entry);
      const info = await client.call('queryInfo', {});
      for (const a of (await client.call('discoverArrays', {})).arrays) {
        const v: CompatVerdict = checkCompat(guide, { name: info.name, version: info.version }, { model: a.model, softwareVersion: a.softwareVersion });
        rows.push({ storage: entry.name, adapter: info.name, adapterVersion: info.version, arrayId: a.id, model: a.model, softwareVersion: a.softwareVersion, supported: v.supported, reason: v.reason });
      }
    }
    return rows;
  }

}

function clientOf(row: { adapter: string; connection: string }): AdapterClient {
  return new AdapterClient(adapterPath(row.adapter), JSON.parse(row.connection) as Record<string, string>);
}

/** The connection as shown: values of parameters the adapter declares secret are `***`. */
function masked(params: { name: string; secret: boolean }[], connection: Record<string, string>): Record<string, string> {
  const secret = new Set(params.filter((p) => p.secret).map((p) => p.name));
  return Object.fromEntries(Object.entries(connection).map(([k, v]) => [k, secret.has(k) ? '***' : v]));
}

function maskAll(connection: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(connection).map((k) => [k, '***']));
}
