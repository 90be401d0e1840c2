import type { StoreHandle } from '../store/store-handle.js';
import { StorageArrayRepo, type StorageArrayRecord } from '../store/repos/storage-array-repo.js';
import { MamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import { AdapterClient } from './adapter-client.js';
import { adapterPath } from './bundled-adapters.js';
import type { AdapterResults } from './adapter-protocol.js';
import { checkCompat, readCompatGuide, type CompatVerdict } from './compat-guide.js';
import type { SecretBox } from '../core/secret-box.js';

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
 * it is added, not during a failover. The connection (passwords among its values) is kept
 * sealed as a whole: which values are secret is the adapter's to say, and it may not answer.
 */
export class StorageArrays {
  #repo: StorageArrayRepo;

  constructor(db: StoreHandle, box: SecretBox) {
    this.#repo = new StorageArrayRepo(db, box);
  }

  async add(input: { name: string; adapter: string; connection: Record<string, string> }): Promise<StorageArrayView> {
    assertValidName('storage array', input.name);
    if (typeof input.adapter !== 'string' || input.adapter === '')
      throw new MamoriError(
        'INVALID_INPUT',
        'give the adapter: a bundled one by name (zfs) or the path of an executable',
      );
    const connection = input.connection ?? {};
    if (typeof connection !== 'object' || Object.values(connection).some((v) => typeof v !== 'string'))
      throw new MamoriError('INVALID_INPUT', 'connection values must be strings (KEY=VALUE)');
    if (await this.#repo.exists(input.name)) {
      throw new MamoriError(
        'INVALID_INPUT',
        `a storage array entry named ${input.name} exists; remove it first or pick another name`,
      );
    }
    const client = new AdapterClient(adapterPath(input.adapter), connection);
    const params = (await client.call('queryConnectionParameters', {})).parameters;
    const missing = params.filter((p) => p.required && !(p.name in connection)).map((p) => p.name);
    if (missing.length > 0)
      throw new MamoriError(
        'INVALID_INPUT',
        `the ${input.adapter} adapter needs connection parameters ${missing.join(', ')} (--connection KEY=VALUE)`,
        { details: { missing } },
      );
    const unknown = Object.keys(connection).filter((k) => !params.some((p) => p.name === k));
    if (unknown.length > 0)
      throw new MamoriError(
        'INVALID_INPUT',
        `the ${input.adapter} adapter takes no connection parameter ${unknown.join(', ')}; it takes ${params.map((p) => p.name).join(', ') || 'none'}`,
      );
    const arrays = (await client.call('discoverArrays', {})).arrays;
    if (arrays.length === 0)
      throw new MamoriError('INVALID_INPUT', `the ${input.adapter} adapter finds no array with that connection`);
    const now = new Date().toISOString();
    await this.#repo.insert({ name: input.name, adapter: input.adapter, connection, createdAt: now });
    return { name: input.name, adapter: input.adapter, connection: masked(params, connection), arrays, createdAt: now };
  }

  async list(): Promise<Omit<StorageArrayView, 'arrays'>[]> {
    const rows = await this.#repo.list();
    return Promise.all(
      rows.map(async (r) => {
        const connection = r.connection;
        // Which values are secret is the adapter's to say; one it cannot answer gets all masked.
        const params = await this.#clientOf(r)
          .call('queryConnectionParameters', {})
          .then(
            (q) => q.parameters,
            () => null,
          );
        return {
          name: r.name,
          adapter: r.adapter,
          connection: params ? masked(params, connection) : maskAll(connection),
          createdAt: r.createdAt,
        };
      }),
    );
  }

  async remove(name: string): Promise<void> {
    if (!(await this.#repo.delete(name)))
      throw new MamoriError('NOT_FOUND', `no storage array entry named ${name}; see 'mamori array list'`);
  }

  /** The adapter client of an entry. */
  async client(name: string): Promise<AdapterClient> {
    const r = await this.#repo.find(name);
    if (!r) throw new MamoriError('NOT_FOUND', `no storage array entry named ${name}; see 'mamori array list'`);
    return this.#clientOf(r);
  }

  async devices(name: string): Promise<{ arrayId: string; devices: AdapterResults['discoverDevices']['devices'] }[]> {
    const client = await this.client(name);
    const out = [];
    for (const a of (await client.call('discoverArrays', {})).arrays)
      out.push({ arrayId: a.id, devices: (await client.call('discoverDevices', { arrayId: a.id })).devices });
    return out;
  }

  /**
   * Where VM images can be made on a device: a filesystem device of one of the entry's arrays,
   * mounted here and writable (a source or an unreplicated device, not a replica).
   */
  async deviceDir(name: string, deviceId: string, arrayId?: string): Promise<string> {
    const found = await this.devices(name);
    const arrays = arrayId === undefined ? found : found.filter((f) => f.arrayId === arrayId);
    const hits = arrays.flatMap((a) =>
      a.devices.filter((d) => d.id === deviceId).map((d) => ({ arrayId: a.arrayId, d })),
    );
    if (hits.length === 0)
      throw new MamoriError(
        'NOT_FOUND',
        `storage entry ${name} has no device ${deviceId}${arrayId ? ` on array ${arrayId}` : ''}; see 'mamori array devices ${name}'`,
        { details: { storage: name, device: deviceId } },
      );
    if (hits.length > 1)
      throw new MamoriError(
        'INVALID_INPUT',
        `arrays ${hits.map((h) => h.arrayId).join(', ')} of entry ${name} each have a device ${deviceId}; name one with --array-id`,
      );
    const { d } = hits[0]!;
    if (d.kind !== 'filesystem')
      throw new MamoriError(
        'INVALID_INPUT',
        `device ${deviceId} is a ${d.kind}; images are made on filesystem devices (map a volume with 'mamori disk create NAME --rdm PATH')`,
      );
    if (d.role !== 'source' && d.role !== 'unreplicated')
      throw new MamoriError(
        'INVALID_INPUT',
        `device ${deviceId} is a ${d.role === 'target' ? 'replica (read-only target)' : d.role} device; make disks on a source or unreplicated device`,
        { details: { role: d.role } },
      );
    if (d.path === null) throw new MamoriError('INVALID_INPUT', `device ${deviceId} is not mounted on this host`);
    return d.path;
  }

  /** The entry of this site that reaches array `arrayId` (the recovery site finds its side of a pair so). */
  async locate(arrayId: string): Promise<{ storage: string; client: AdapterClient }> {
    for (const entry of await this.#repo.list()) {
      const client = this.#clientOf(entry);
      const arrays = await client.call('discoverArrays', {}).then(
        (r) => r.arrays,
        () => [],
      );
      if (arrays.some((a) => a.id === arrayId)) return { storage: entry.name, client };
    }
    throw new MamoriError(
      'NOT_FOUND',
      `no storage array entry at this site reaches array ${arrayId}; add one with 'mamori array add NAME --adapter ADAPTER --connection KEY=VALUE'`,
      { details: { arrayId } },
    );
  }

  /** The compatibility guide's verdict on one array of one entry. */
  async compatOf(name: string, arrayId: string, guideFile?: string): Promise<CompatReportRow> {
    const row = (await this.compatCheck(guideFile, name)).find((r) => r.arrayId === arrayId);
    if (!row)
      throw new MamoriError(
        'NOT_FOUND',
        `storage array entry ${name} does not reach array ${arrayId}; see 'mamori array list'`,
        { details: { storage: name, arrayId } },
      );
    return row;
  }

  /** `mamori compat check`: every array of every entry against the compatibility guide. */
  async compatCheck(guideFile?: string, only?: string): Promise<CompatReportRow[]> {
    const guide = await readCompatGuide(guideFile);
    const rows: CompatReportRow[] = [];
    for (const entry of await this.#repo.list()) {
      if (only !== undefined && entry.name !== only) continue;
      const client = this.#clientOf(entry);
      const info = await client.call('queryInfo', {});
      for (const a of (await client.call('discoverArrays', {})).arrays) {
        const v: CompatVerdict = checkCompat(
          guide,
          { name: info.name, version: info.version },
          { model: a.model, softwareVersion: a.softwareVersion, features: a.features },
        );
        rows.push({
          storage: entry.name,
          adapter: info.name,
          adapterVersion: info.version,
          arrayId: a.id,
          model: a.model,
          softwareVersion: a.softwareVersion,
          supported: v.supported,
          reason: v.reason,
        });
      }
    }
    return rows;
  }

  /** Upgrade: seals connections stored in clear before sealing; returns how many. */
  async sealClearConnections(): Promise<number> {
    return this.#repo.sealClearConnections();
  }

  #clientOf(row: StorageArrayRecord): AdapterClient {
    return new AdapterClient(adapterPath(row.adapter), row.connection);
  }
}

/** The connection as shown: values of parameters the adapter declares secret are `***`. */
function masked(
  params: { name: string; secret: boolean }[],
  connection: Record<string, string>,
): Record<string, string> {
  const secret = new Set(params.filter((p) => p.secret).map((p) => p.name));
  return Object.fromEntries(Object.entries(connection).map(([k, v]) => [k, secret.has(k) ? '***' : v]));
}

function maskAll(connection: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(connection).map((k) => [k, '***']));
}
