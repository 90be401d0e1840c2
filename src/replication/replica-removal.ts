import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import { VmRepo } from '../store/repos/vm-repo.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import type { ReplicaDiskSpec } from '../store/records/replica-record.js';
import { ReplicaChain, type ChainLayer } from './replica-chain.js';
import { MamoriError } from '../core/mamori-error.js';
import { syncDirectory } from '../core/durable-sync.js';
import type { Logger } from '../core/logger.js';
import { faultPoint } from '../core/fault-points.js';

/*
 * How a replica goes, files and rows together, so that a crash at any point leaves a state
 * the next start finishes (the style of src/disks/staged-file.ts):
 *   1. its folder is renamed to `.deleting-<id>` (one rename: the folder is either whole and
 *      live or marked), after `removal.json` in it lists the files outside the folder it
 *      owns (seed layers of a reprotect: an old disk, a recovered VM's overlay);
 *   2. its rows go in one transaction (points, holds, the recovered-VM records, the replica),
 *      the one that locked the replica's row, found no VM holding it, and did step 1;
 *   3. the listed files no one else names, then the folder, are deleted.
 * repair() at start finishes every `.deleting-*` folder: rows first (a crash after 1), then
 * files. Nothing is ever rolled back: the checks that allowed the deletion ran before step 1,
 * and a VM's hold, the one check a concurrent request can change, is taken under the row lock.
 */

const DELETING = '.deleting-';
const JOURNAL = 'removal.json';
const RETIRED = '~retired-';

/** What still uses a replica: named so the refusal can say what to do first. */
export interface ReplicaUsers {
  /** VMs made from its points (a failover's VM, a test VM), with their state. */
  vms: { name: string; state: string }[];
  /** Replicas whose seed (a reprotect's old disk) reads its files, until their compaction. */
  replicas: string[];
}

export class ReplicaRemoval {
  #replicas: ReplicaRepo;
  #vms: VmRepo;
  #disks: DiskRepo;
  #root: string;
  #log: Logger;

  constructor(deps: { db: StoreHandle; root: string; log: Logger }) {
    this.#replicas = new ReplicaRepo(deps.db);
    this.#vms = new VmRepo(deps.db);
    this.#disks = new DiskRepo(deps.db);
    this.#root = deps.root;
    this.#log = deps.log;
  }

  static isRetired(sourceVmId: string): boolean {
    return sourceVmId.includes(RETIRED);
  }

  async usersOf(id: string): Promise<ReplicaUsers> {
    const vms = await this.#replicas.recoveredVmsOf(id);
    for (const holder of await this.#replicas.holdersOf(id)) {
      if (!holder.startsWith('vm:')) continue;
      const vm = await this.#vms.nameAndState(holder.slice(3));
      if (vm && !vms.some((v) => v.name === vm.name)) vms.push(vm);
    }
    const dir = join(this.#root, id) + sep;
    const replicas: string[] = [];
    for (const other of await this.#replicas.disksOfAll(id)) {
      const seeds = await this.#seedsOf(other.id, other.disks);
      if (seeds.some((l) => l.file.startsWith(dir))) replicas.push(other.id);
    }
    return { vms, replicas };
  }

  /**
   * Steps 1 to 3 above. The caller holds the replica's lock and checked its users. A VM made
   * over one of its points since (a recovery or an incoming migration takes no replica lock;
   * on PostgreSQL another server may make it) still refuses the removal: steps 1 and 2 run in
   * the transaction that locks the replica's row and finds no hold (ReplicaRepo.deleteUnlessHeld),
   * so either the hold was first and this throws REPLICA_IN_USE having changed nothing, or
   * this was first and the hold is refused (REPLICA_REMOVED). Never both.
   */
  async remove(id: string): Promise<void> {
    if (await this.#removeUnlessHeld(id)) return;
    const vmName = (await this.#replicas.get(id))?.vmName ?? 'a VM';
    throw replicaInUse(`the replica ${id} of ${vmName}`, await this.usersOf(id));
  }

  /** remove(), or false (nothing changed) when a VM holds one of its points. */
  async #removeUnlessHeld(id: string): Promise<boolean> {
    const live = join(this.#root, id);
    const marked = join(this.#root, `${DELETING}${id}`);
    const disks = await this.#replicas.disksOf(id);
    const owned = disks ? await this.#seedsOf(id, disks, true) : [];
    const external = owned.filter((l) => !isInside(l.file, this.#root));
    // Files only in here: the transaction is open (on SQLite, the store's one connection waits).
    const removed = await this.#replicas.deleteUnlessHeld(id, async () => {
      await mkdir(live, { recursive: true });
      await writeJson(join(live, JOURNAL), { id, external: external.map((l) => l.file) });
      await rename(live, marked);
      await syncDirectory(this.#root);
      faultPoint('replica-removal-marked');
    });
    if (!removed) return false;
    await this.#deleteFiles(id, marked);
    // Retired replicas it read through (its seed) are released with it.
    await this.releaseSeed(
      owned.filter((l) => isInside(l.file, this.#root)),
      id,
    );
    return true;
  }

  /**
   * Seed layers a chain stopped reading (deleted replica, absorbed seed): a file inside an
   * older retired replica releases that replica (deleted once nothing else reads it); a file
   * elsewhere (a superseded VM's disk, a recovered VM's overlay, whose rows reprotect removed)
   * is deleted unless a disk or another replica still names it.
   */
  async releaseSeed(layers: ChainLayer[], releasedBy: string): Promise<void> {
    const retired = new Set<string>();
    for (const l of layers) {
      const owner = this.#replicaOwning(l.file);
      if (owner !== null) {
        retired.add(owner);
      } else if (!(await this.#named(l.file, releasedBy))) {
        await rm(l.file, { force: true });
        await rmdirIfEmpty(dirname(l.file));
        this.#log.info({ file: l.file, releasedBy }, 'deleted a seed layer no chain reads any more');
      }
    }
    for (const owner of retired) {
      const sourceVmId = await this.#replicas.sourceVmIdOf(owner);
      if (sourceVmId === undefined || !ReplicaRemoval.isRetired(sourceVmId)) continue;
      const users = await this.usersOf(owner);
      if (users.vms.length > 0 || users.replicas.some((x) => x !== releasedBy)) continue;
      this.#log.info({ replica: owner, releasedBy }, 'deleting a retired replica no chain reads any more');
      if (!(await this.#removeUnlessHeld(owner)))
        this.#log.info({ replica: owner }, 'a VM was made over the retired replica meanwhile: it stays until released');
    }
  }

  /** At start: finishes deletions a crash cut (see the top of this file). */
  async repair(): Promise<void> {
    for (const name of await readdir(this.#root).catch(() => [] as string[])) {
      if (!name.startsWith(DELETING)) continue;
      const id = name.slice(DELETING.length);
      this.#log.warn({ replica: id }, 'finishing the deletion of a replica cut by a restart');
      await this.#finish(id, join(this.#root, name));
    }
  }

  async #finish(id: string, marked: string): Promise<void> {
    await this.#replicas.deleteRows(id);
    await this.#deleteFiles(id, marked);
  }

  /** Step 3: the listed files no one else names, then the marked folder. */
  async #deleteFiles(id: string, marked: string): Promise<void> {
    const journal = await readFile(join(marked, JOURNAL), 'utf8').then(
      (t) => JSON.parse(t) as { external?: unknown },
      () => ({ external: [] }),
    );
    const external = Array.isArray(journal.external)
      ? journal.external.filter((f): f is string => typeof f === 'string' && f.startsWith('/'))
      : [];
    for (const file of external) {
      if (await this.#named(file, id)) continue;
      await rm(file, { force: true });
      await rmdirIfEmpty(dirname(file));
    }
    await rm(marked, { recursive: true, force: true });
    await syncDirectory(this.#root);
  }

  /** Whether a disk row or a replica other than `except` still names the file. */
  async #named(file: string, except: string): Promise<boolean> {
    const abs = resolve(file);
    for (const d of await this.#disks.list()) {
      if (resolve(d.path) === abs || d.overlays.some((o) => resolve(o) === abs)) return true;
    }
    for (const r of await this.#replicas.disksOfAll(except)) {
      if ((await this.#seedsOf(r.id, r.disks, true)).some((l) => resolve(l.file) === abs)) return true;
    }
    return false;
  }

  /** A replica's seed layers over all disks (and, with released, those awaiting deletion). */
  async #seedsOf(id: string, disks: ReplicaDiskSpec[], withReleased = false): Promise<ChainLayer[]> {
    const out: ChainLayer[] = [];
    for (const d of disks) {
      const chain = await ReplicaChain.open(join(this.#root, id, `disk${d.index}`)).catch(() => null);
      if (!chain) continue;
      const s = chain.seedLayers();
      out.push(...s.current, ...(withReleased ? s.released : []));
    }
    return out;
  }

  #replicaOwning(file: string): string | null {
    const abs = resolve(file);
    if (!isInside(abs, this.#root)) return null;
    const first = abs.slice(resolve(this.#root).length + 1).split(sep)[0] ?? '';
    return first === '' || first.startsWith('.') ? null : first;
  }
}

export function replicaInUse(what: string, users: ReplicaUsers): MamoriError {
  const todo = [
    ...users.vms.map(
      (v) =>
        `VM ${v.name} (${v.state}) runs on its points: delete it first ('mamori vm delete ${v.name}'; a test copy goes with 'mamori plan run PLAN --mode cleanup')`,
    ),
    ...users.replicas.map(
      (r) =>
        `replica ${r} reads it as the seed of a reprotect: it is released by itself once ${r} has its next point (or delete ${r} first)`,
    ),
  ];
  return new MamoriError('REPLICA_IN_USE', `${what} is in use: ${todo.join('; ')}`, {
    details: { vms: users.vms.map((v) => v.name), replicas: users.replicas },
  });
}

function isInside(file: string, root: string): boolean {
  return resolve(file).startsWith(resolve(root) + sep);
}

async function writeJson(path: string, value: unknown): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(`${JSON.stringify(value)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function rmdirIfEmpty(dir: string): Promise<void> {
  // Only a recovered run's folder is removed when it empties; pool roots and replica folders stay.
  if (!/\/recovered\/[^/]+$/.test(dir)) return;
  if ((await readdir(dir).catch(() => ['x'])).length === 0) await rm(dir, { recursive: true, force: true });
}
