import { access, constants, mkdir, realpath, rm, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import { VmRepo } from '../store/repos/vm-repo.js';
import type { DiskRecord, ImageFormat, RdmMode } from './disk-record.js';
import { IMAGE_FORMATS, RDM_MODES } from './disk-record.js';
import { assertUserPoolPath, resolveInPool } from './pool-path.js';
import { assertValidName } from '../core/names.js';
import { newShortId } from '../core/ids.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { HostPathPolicy } from '../host/host-path-policy.js';
import { hostPathIdentity } from '../host/host-path-policy.js';
import { discardStaged, placeStaged, stagedFilesIn, stagingPath } from './staged-file.js';
import { checkUntrustedImage, untrustedImageInfo, untrustedImageName } from '../qemu/qemu-img-read.js';
import { convertImage, createImage, createQcow2 } from '../qemu/qemu-img-write.js';
import { vetUntrustedImage } from '../images/untrusted-image.js';
import type { Job, JobJournal } from '../jobs/job-journal.js';
import {
  EXTENSION_FORMATS,
  FORMAT_ALIASES,
  IMPORT_FORMATS,
  IMPORT_JOB,
  importTempPath,
  type ImportInput,
  type ImportJobContext,
} from './disk-import-job.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import { runProcess } from '../core/run-process.js';
import type { ArrayDeviceDirs } from './array-device-dirs.js';

export const DEFAULT_POOL = 'default';

export interface CreateDiskInput {
  name: string;
  sizeBytes: number;
  format?: ImageFormat;
  /** Relative to the pool, or absolute inside it. Default: NAME.FORMAT in the pool. */
  path?: string;
  shared?: boolean;
  /** Make it on a replicated array device (mounted here) instead of in the pool: array-based protection. */
  onArray?: { storage: string; deviceId: string; arrayId?: string };
}

export interface CreateRdmInput {
  name: string;
  device: string;
  mode: RdmMode;
  shared?: boolean;
}

/** Image disks in storage pools and raw device mappings. */
export class DiskService {
  /** Imports in flight, by job id: a conversion waits on its copy without polling. */
  #importsRunning = new Map<string, Promise<void>>();
  readonly repo: DiskRepo;
  #vms: VmRepo;
  #paths: SitePaths;
  #jobs: JobJournal;
  #log: Logger;
  readonly hostPaths: HostPathPolicy;
  /** Absent: this site makes no disks on array devices. */
  #arrays: ArrayDeviceDirs | null;

  constructor(deps: {
    db: StoreHandle;
    paths: SitePaths;
    jobs: JobJournal;
    log: Logger;
    hostPaths: HostPathPolicy;
    arrays?: ArrayDeviceDirs;
  }) {
    this.#arrays = deps.arrays ?? null;
    this.#vms = new VmRepo(deps.db);
    this.repo = new DiskRepo(deps.db);
    this.#paths = deps.paths;
    this.#jobs = deps.jobs;
    this.#log = deps.log;
    this.hostPaths = deps.hostPaths;
    this.#jobs.define(IMPORT_JOB, (job, ctx) => this.#recoverImport(job, ctx));
  }

  poolDir(pool = DEFAULT_POOL): string {
    return this.#paths.pool(pool);
  }

  async get(name: string): Promise<DiskRecord> {
    const d = await this.repo.findByName(name);
    if (!d)
      throw new MamoriError('DISK_NOT_FOUND', `no disk named ${JSON.stringify(name)}; see 'mamori disk list'`, {
        details: { name },
      });
    return d;
  }

  async list(): Promise<DiskRecord[]> {
    return this.repo.list();
  }

  /**
   * A qcow2 overlay in the pool on an image outside it (a replica point), owned by its VM:
   * QEMU follows the backing named in its header. Like prepareImage, made at a staging name;
   * the caller writes the row, then placePrepared (or discardPrepared if the row failed).
   */
  async prepareOverlay(input: { name: string; backing: string; sizeBytes: number; vmId: string }): Promise<DiskRecord> {
    assertValidName('disk', input.name);
    await this.#assertNameFree(input.name);
    const pool = this.poolDir();
    await mkdir(pool, { recursive: true });
    const path = resolveInPool(pool, `${input.name}.qcow2`);
    if (await exists(path))
      throw new MamoriError('DISK_EXISTS', `a file already exists at ${path}; choose another name`, {
        details: { path },
      });
    const id = newShortId('disk');
    await createQcow2(stagingPath(path, id), { backing: { file: input.backing, format: 'qcow2' } });
    return {
      id,
      name: input.name,
      pool: DEFAULT_POOL,
      kind: 'image',
      format: 'qcow2',
      path,
      sizeBytes: input.sizeBytes,
      rdmMode: null,
      shared: false,
      vmId: input.vmId,
      ownedByVm: true,
      createdAt: new Date().toISOString(),
      overlays: [],
    };
  }

  /**
   * Validates and makes an image file at a staging name of its own, returning the record
   * (with its final path) without inserting it, so a VM create can insert disk and VM rows in
   * one transaction. After the rows commit the caller calls placePrepared; if they fail,
   * discardPrepared. A request that loses a race for the name never touches the winner's file.
   */
  async prepareImage(input: CreateDiskInput & { vmId?: string | null; ownedByVm?: boolean }): Promise<DiskRecord> {
    assertValidName('disk', input.name);
    const format = input.format ?? 'qcow2';
    if (!IMAGE_FORMATS.includes(format))
      throw new MamoriError('INVALID_INPUT', `disk format must be one of ${IMAGE_FORMATS.join(', ')}`);
    if (input.shared)
      throw new MamoriError(
        'SHARED_DISK_NOT_RDM',
        'only raw device mappings can be shared between VMs: an image file shared read-write would be corrupted by two writers; use --rdm DEVICE --shared',
      );
    if (!Number.isSafeInteger(input.sizeBytes) || input.sizeBytes < 1024 * 1024 || input.sizeBytes > 64 * 1024 ** 4) {
      throw new MamoriError('OUT_OF_RANGE', `disk size ${input.sizeBytes} bytes is out of range: 1 MiB to 64 TiB`);
    }
    await this.#assertNameFree(input.name);
    let pool = this.poolDir();
    if (input.onArray) {
      if (!this.#arrays) throw new MamoriError('INVALID_INPUT', 'this site has no storage arrays');
      // The device's mount point is the "pool" here: the same path checks apply below it.
      pool = await this.#arrays.deviceDir(input.onArray.storage, input.onArray.deviceId, input.onArray.arrayId);
    }
    await mkdir(pool, { recursive: true });
    const path = resolveInPool(pool, input.path ?? `${input.name}.${format}`);
    if (input.path !== undefined) assertUserPoolPath(pool, path);
    await this.#assertParentInsidePool(pool, path);
    if (await exists(path))
      throw new MamoriError('DISK_EXISTS', `a file already exists at ${path}; choose another name or path`, {
        details: { path },
      });
    if (await this.repo.findByPath(path)) throw new MamoriError('DISK_EXISTS', `another disk already uses ${path}`);
    const id = newShortId('disk');
    await createImage(stagingPath(path, id), format, input.sizeBytes);
    return {
      id,
      name: input.name,
      pool: DEFAULT_POOL,
      kind: 'image',
      format,
      path,
      sizeBytes: input.sizeBytes,
      rdmMode: null,
      shared: false,
      vmId: input.vmId ?? null,
      ownedByVm: input.ownedByVm ?? false,
      createdAt: new Date().toISOString(),
      overlays: [],
    };
  }

  async create(input: CreateDiskInput): Promise<DiskRecord> {
    const disk = await this.prepareImage(input);
    try {
      await this.repo.insert(disk);
    } catch (e) {
      await this.discardPrepared([disk]);
      throw e;
    }
    await this.placePrepared([disk]);
    return disk;
  }

  /** After the rows of prepared disks committed: their files take their final names. */
  async placePrepared(disks: DiskRecord[]): Promise<void> {
    for (const d of disks) {
      try {
        await placeStaged(stagingPath(d.path, d.id), d.path);
      } catch (e) {
        // Something else took the path (a file made outside mamori): the row must not name it.
        await this.repo.delete(d.id);
        await this.discardPrepared([d]);
        throw e;
      }
    }
  }

  /** The rows of prepared disks were not written: remove their staging files, and nothing else. */
  async discardPrepared(disks: DiskRecord[]): Promise<void> {
    for (const d of disks) await discardStaged(stagingPath(d.path, d.id));
  }

  /**
   * At start: a server killed between a disk's row and its file's placing left the file at
   * its staging name (place it now); a staging file whose row never committed is removed.
   */
  async repairStaged(): Promise<void> {
    for (const f of await stagedFilesIn(this.poolDir())) {
      const row = await this.repo.byIds([f.ownerId]);
      if (row[0] && row[0].path === f.finalPath && !(await exists(f.finalPath))) {
        await placeStaged(f.path, f.finalPath);
        this.#log.info({ disk: row[0].name, path: f.finalPath }, 'disk file placed after an interrupted create');
      } else if (!row[0]) {
        await discardStaged(f.path);
      }
    }
  }

  async createRdm(input: CreateRdmInput): Promise<DiskRecord> {
    assertValidName('disk', input.name);
    if (!RDM_MODES.includes(input.mode))
      throw new MamoriError(
        'INVALID_INPUT',
        `RDM mode must be 'virtual' or 'physical', not ${JSON.stringify(input.mode)}`,
      );
    await this.#assertNameFree(input.name);
    // The canonical path: /etc/./shadow, //etc/shadow and a symlink to it are one file, and
    // the policy (allow-list, never the data folder) judges that file.
    const device = await this.hostPaths.device(input.device);
    let st;
    try {
      st = await stat(device.path);
      await access(device.path, constants.R_OK | constants.W_OK);
    } catch {
      throw new MamoriError(
        'HOST_PATH_REFUSED',
        `${JSON.stringify(input.device)} cannot be opened for reading and writing by the site server`,
      );
    }
    // "Already mapped" is the same object (device number or inode), whatever path names it.
    for (const other of (await this.repo.list()).filter((d) => d.kind === 'rdm')) {
      if ((await hostPathIdentity(other.path)) !== device.identity) continue;
      if (!input.shared || !other.shared)
        throw new MamoriError(
          'DISK_EXISTS',
          `${input.device} is already mapped as disk ${other.name}; map it twice only with --shared on both`,
        );
    }
    const sizeBytes = st.isBlockDevice() ? await blockDeviceSize(device.path) : st.size;
    const disk: DiskRecord = {
      id: newShortId('disk'),
      name: input.name,
      pool: DEFAULT_POOL,
      kind: 'rdm',
      format: 'raw',
      path: device.path,
      sizeBytes,
      rdmMode: input.mode,
      shared: input.shared ?? false,
      vmId: null,
      ownedByVm: false,
      createdAt: new Date().toISOString(),
      overlays: [],
    };
    await this.repo.insert(disk);
    return disk;
  }

  /**
   * Checks the source now (so bad input is a 4xx, not a failed job) and converts it into
   * the pool in the background. The copy goes to a hidden temporary name and is renamed
   * only when complete, so a crash never leaves a half image under the disk's name.
   */
  async startImport(input: ImportInput, opts: { checked?: boolean } = {}): Promise<Job> {
    assertValidName('disk', input.name);
    await this.#assertNameFree(input.name);
    const targetFormat = input.targetFormat ?? 'qcow2';
    if (!IMAGE_FORMATS.includes(targetFormat))
      throw new MamoriError('INVALID_INPUT', `target format must be one of ${IMAGE_FORMATS.join(', ')}`);
    if (typeof input.source !== 'string' || !input.source.startsWith('/'))
      throw new MamoriError('INVALID_INPUT', 'source must be an absolute path on the site server host');
    // Judged and used by its canonical path (allow-list, never the data folder).
    input = { ...input, source: (await this.hostPaths.image(input.source)).path };
    try {
      await access(input.source, constants.R_OK);
    } catch {
      throw new MamoriError('HOST_PATH_REFUSED', `source image ${input.source} is not readable by the site server`);
    }
    const requested = input.format ? (FORMAT_ALIASES[input.format] ?? input.format) : undefined;
    if (requested && !(IMPORT_FORMATS as readonly string[]).includes(requested)) {
      throw new MamoriError(
        'IMAGE_FORMAT_UNSUPPORTED',
        `cannot import format ${input.format}; supported: qcow2, raw, vmdk, vhd, vhdx`,
      );
    }
    // From outside the site: mamori reads the headers and refuses references first; QEMU gets the format pinned and no backing.
    const image = await vetUntrustedImage({
      file: input.source,
      ...(input.member ? { member: input.member } : {}),
      ...(requested ? { format: requested } : {}),
    });
    const src = untrustedImageName(image);
    const info = await untrustedImageInfo(image);
    const expected = input.member ? undefined : EXTENSION_FORMATS[extname(input.source).toLowerCase()];
    if (!requested && expected && info.format !== expected) {
      // A .vmdk that QEMU probes as raw is usually a damaged or descriptor-less file: importing
      // it as raw would silently produce a wrong disk.
      throw new MamoriError(
        'IMAGE_CORRUPT',
        `${input.source} is named like ${expected} but QEMU reads it as ${info.format}; it may be damaged. Pass --format ${info.format} if that is intended`,
      );
    }
    if (!(IMPORT_FORMATS as readonly string[]).includes(info.format))
      throw new MamoriError('IMAGE_FORMAT_UNSUPPORTED', `cannot import format ${info.format}`);
    // A caller that just inspected the source through QEMU has had it checked already.
    if (!opts.checked) await checkUntrustedImage(image);
    const pool = this.poolDir();
    await mkdir(pool, { recursive: true });
    const finalPath = resolveInPool(pool, `${input.name}.${targetFormat}`);
    if (await exists(finalPath)) throw new MamoriError('DISK_EXISTS', `a file already exists at ${finalPath}`);
    const job = await this.#jobs.create(IMPORT_JOB, input.name);
    const done = this.#runImport(
      job.id,
      { ...input, source: src },
      info.format,
      info.virtualSize,
      targetFormat,
      finalPath,
    );
    this.#importsRunning.set(job.id, done);
    void done.finally(() => this.#importsRunning.delete(job.id));
    return job;
  }

  /** Resolves when an import started here ends (its job says how); at once for one not running here. */
  async importEnded(jobId: string): Promise<void> {
    await this.#importsRunning.get(jobId);
  }

  async delete(name: string): Promise<void> {
    const disk = await this.get(name);
    // Shared disks are attached without an owner column, so look in the VM definitions too.
    const vm = await this.#vms.nameOfVmUsingDisk(disk.id, disk.vmId);
    if (vm !== undefined)
      throw new MamoriError('DISK_IN_USE', `disk ${name} is attached to VM ${vm}; delete or change that VM first`);
    // Only the request that deleted the row removes the files: a second delete racing it
    // must not remove a file a new disk of the same name has made meanwhile.
    if (!(await this.repo.delete(disk.id)))
      throw new MamoriError('DISK_NOT_FOUND', `disk ${name} was deleted by another request`, { details: { name } });
    for (const o of disk.overlays) await rm(o, { force: true });
    if (disk.kind === 'image') await rm(disk.path, { force: true });
  }

  async #runImport(
    jobId: string,
    input: ImportInput,
    srcFormat: string,
    size: number,
    targetFormat: ImageFormat,
    finalPath: string,
  ): Promise<void> {
    const temp = importTempPath(finalPath, jobId);
    try {
      await this.#jobs.step(jobId, 'convert', () =>
        convertImage(input.source, srcFormat, temp, targetFormat, (f) => void this.#jobs.progress(jobId, f * 0.99)),
      );
      // The row first (the database picks the one winner of a name), then the file is linked
      // into place without replacing anything; a loser removes only its own temporary file.
      const disk = await this.#jobs.step(jobId, 'register', async () => {
        const id = newShortId('disk');
        // Recovery needs the row's id: only a row of this job may be rolled back (a name race's winner stays).
        await this.#jobs.setContext(IMPORT_JOB, jobId, { disk: id, path: finalPath });
        const d: DiskRecord = {
          id,
          name: input.name,
          pool: DEFAULT_POOL,
          kind: 'image',
          format: targetFormat,
          path: finalPath,
          sizeBytes: size,
          rdmMode: null,
          shared: false,
          vmId: null,
          ownedByVm: false,
          createdAt: new Date().toISOString(),
          overlays: [],
        };
        await this.repo.insert(d);
        try {
          await placeStaged(temp, finalPath);
        } catch (e) {
          await this.repo.delete(d.id);
          throw e;
        }
        return d;
      });
      await this.#jobs.succeed(jobId, {
        disk: disk.name,
        path: disk.path,
        format: disk.format,
        sizeBytes: disk.sizeBytes,
      });
    } catch (e) {
      await rm(temp, { force: true });
      const err = isMamoriError(e) ? { code: e.code, message: e.message } : { code: 'INTERNAL', message: String(e) };
      this.#log.warn({ jobId, err }, 'disk import failed');
      await this.#jobs.fail(jobId, err);
    }
  }

  /**
   * Policy rollback: a server that died mid-import leaves a temporary file, and if it died in
   * 'register', maybe the row (by the id the job recorded) and the file linked into place. All
   * of it goes: the job is failed, and a disk left under the name would refuse the "run it
   * again" its message asks for.
   */
  async #recoverImport(job: Job, ctx: ImportJobContext | null): Promise<string | undefined> {
    if (!job.target) return undefined;
    for (const fmt of IMAGE_FORMATS) {
      await rm(importTempPath(join(this.poolDir(), `${job.target}.${fmt}`), job.id), { force: true });
    }
    const row = ctx?.disk ? (await this.repo.byIds([ctx.disk]))[0] : undefined;
    if (!row)
      return `the site server stopped during the import of disk ${job.target}; its temporary copy was removed, run the import again`;
    // The file only after the row: a crash in between leaves an orphan file at worst, never a row without it.
    await this.repo.delete(row.id);
    await rm(row.path, { force: true });
    return `the site server stopped while disk ${row.name} was registered; it was removed again, run the import again`;
  }

  async #assertNameFree(name: string): Promise<void> {
    if (await this.repo.findByName(name))
      throw new MamoriError('DISK_EXISTS', `a disk named ${name} already exists; choose another name`, {
        details: { name },
      });
  }

  async #assertParentInsidePool(pool: string, path: string): Promise<void> {
    // A symlinked folder inside the pool must not lead out of it.
    await mkdir(dirname(path), { recursive: true });
    const realParent = await realpath(dirname(path));
    resolveInPool(await realpath(pool), join(realParent, basename(path)));
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function blockDeviceSize(device: string): Promise<number> {
  const { stdout } = await runProcess('blockdev', ['--getsize64', device], { timeoutMs: 10_000 });
  return Number(stdout.trim());
}
