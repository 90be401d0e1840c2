import { join } from 'node:path';
import { CHECKPOINT_FLAG } from '../cdp/journal-format.js';
import { JournalPointServer, commonCheckpointAtOrBefore, type JournalPointDisk } from '../cdp/journal-point-server.js';
import { verifyAtPointInTime } from '../cdp/point-in-time-verify.js';
import type { RecoveryJournals } from '../cdp/recovery-journals.js';
import { MamoriError } from '../core/mamori-error.js';
import type { WriteLogReport } from '../guest/writelog-verifier.js';
import { ReplicaChain } from './replica-chain.js';
import type { ReplicaPointView, ReplicaView } from '../store/records/replica-record.js';

/** A point's files, one per disk in disk order: the top layer a recovered VM's overlay is backed by. */
export interface PointFiles {
  point: ReplicaPointView;
  files: string[];
}

/*
 * A continuous replica's points in time where the recovery site's replica points are used: the
 * newest point at or before a time, a checkpoint served to the VMs recovered at it, and the
 * write-log verifier at an instant. ReplicaService holds the lock and delegates here.
 */

export interface ReplicaJournalPointsDeps {
  journals: RecoveryJournals;
  /** The replicas' folder. */
  root: string;
  replica: (id: string) => Promise<ReplicaView>;
  /** A point's disk point ids, as recorded (NOT_FOUND if retention dropped it). */
  recordedDiskPoints: (id: string, pointId: string) => Promise<string[]>;
}

export class ReplicaJournalPoints {
  readonly #d: ReplicaJournalPointsDeps;

  constructor(deps: ReplicaJournalPointsDeps) {
    this.#d = deps;
  }

  /**
   * The newest point at or before `atMs` a recovery can stand on: a replica point, or a
   * continuous replica's checkpoint (as `journal@TIME`) when one is newer.
   */
  async pointIdAt(id: string, atMs: number): Promise<string> {
    const replica = await this.#d.replica(id);
    const point = replica.points.filter((p) => Date.parse(p.time) <= atMs).at(-1);
    const checkpoint = (await this.#d.journals.checkpoints(id, { toUs: atMs * 1000 + 999 }))?.at(-1);
    if (checkpoint !== undefined && (point === undefined || Date.parse(checkpoint.time) > Date.parse(point.time)))
      return journalPointId(checkpoint.time);
    if (point === undefined)
      throw new MamoriError('NOT_FOUND', `no recovery point at or before ${new Date(atMs).toISOString()}`, {
        details: { replica: id, time: new Date(atMs).toISOString() },
      });
    return point.id;
  }

  /**
   * The instant a recovery at `atMs` stands on: the newest checkpoint at or before it that every
   * disk's journal holds (the whole millisecond named: a checkpoint's time in µs lies within the
   * ms its ISO time shows), as a point.
   */
  async instantAt(id: string, atMs: number): Promise<{ timeUs: number; point: ReplicaPointView }> {
    const replica = await this.#d.replica(id);
    const atUs = atMs * 1000 + 999;
    const epoch = await this.#d.journals.epochAt(id, atUs);
    if (epoch === null)
      throw new MamoriError(
        'NOT_FOUND',
        `${replica.vmName} has no point in time at or before ${new Date(atMs).toISOString()}: its journal's window begins later`,
        { details: { replica: id } },
      );
    const indexes = replica.disks.map((d) => epoch.indexes.get(d.index)!);
    const timeUs = commonCheckpointAtOrBefore(indexes, atUs)!;
    const applicationConsistent = indexes.every(
      (index) => (index.checkpointsBetween(timeUs, timeUs)[0]!.flags & CHECKPOINT_FLAG.applicationConsistent) !== 0,
    );
    const time = new Date(timeUs / 1000).toISOString();
    return {
      timeUs,
      point: {
        id: journalPointId(time),
        time,
        consistency: applicationConsistent ? 'application' : 'crash',
        committedAt: time,
      },
    };
  }

  /**
   * The replica's disks at instant `timeUs` (a checkpoint's, from instantAt), served from `dir`
   * over NBD: each disk is its epoch's base point with the journal up to the checkpoint over it
   * (cdp/journal-point-server.ts). Nothing is copied. Call under the replica's lock: no commit
   * or retention may move the base while the server opens it (a recovered VM's hold keeps them
   * off it after).
   */
  async serve(id: string, timeUs: number, dir: string): Promise<JournalPointServer> {
    const replica = await this.#d.replica(id);
    const epoch = await this.#d.journals.epochAt(id, timeUs);
    if (epoch === null)
      throw new MamoriError(
        'NOT_FOUND',
        `${replica.vmName}'s journal no longer holds ${new Date(timeUs / 1000).toISOString()}`,
        { details: { replica: id } },
      );
    const diskPoints = await this.#d.recordedDiskPoints(id, epoch.base.basePointId);
    const disks: JournalPointDisk[] = [];
    for (const [i, d] of replica.disks.entries()) {
      const chain = await ReplicaChain.open(join(this.#d.root, id, `disk${d.index}`));
      disks.push({ index: d.index, baseFile: chain.point(diskPoints[i]!).file, journal: epoch.indexes.get(d.index)! });
    }
    return JournalPointServer.start({ dir, disks, timeUs });
  }

  /** The write-log verifier on disk 0 at a point in time (call under the replica's lock). */
  async verifyAt(id: string, atUs: number): Promise<{ point: ReplicaPointView; disk: number; report: WriteLogReport }> {
    const replica = await this.#d.replica(id);
    if ((await this.#d.journals.base(id)) === null)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `${replica.vmName} replicates in cycles, without a journal: verify one of its points (--point ID)`,
      );
    const epoch = await this.#d.journals.epochAt(id, atUs);
    if (epoch === null)
      throw new MamoriError(
        'NOT_FOUND',
        `${replica.vmName} has no point in time at or before ${new Date(atUs / 1000).toISOString()}: its journal's window begins later`,
      );
    const disk = replica.disks[0]!.index;
    const diskPoint = (await this.#d.recordedDiskPoints(id, epoch.base.basePointId))[0]!;
    // The replica's lock (held by the caller) keeps commits and retention off the base meanwhile.
    const chain = await ReplicaChain.open(join(this.#d.root, id, `disk${disk}`));
    const v = await verifyAtPointInTime({
      baseFile: chain.point(diskPoint).file,
      journals: epoch.indexes,
      disk,
      timeUs: atUs,
    });
    const time = new Date(v.timeUs / 1000).toISOString();
    // The instant verified, as a point: the checkpoint the time asked rounded down to.
    const point = { id: `journal@${time}`, time, consistency: 'crash' as const, committedAt: time };
    return { point, disk, report: v.report };
  }
}

/** The id a continuous replica's point in time goes by where a point's id is asked for: `journal@TIME`. */
export function journalPointId(time: string): string {
  return `journal@${time}`;
}

/** The time (epoch ms) a `journal@TIME` id names, or null for a replica point's id. */
export function journalPointTime(pointId: string): number | null {
  if (!pointId.startsWith('journal@')) return null;
  const t = Date.parse(pointId.slice('journal@'.length));
  if (Number.isNaN(t)) throw new MamoriError('INVALID_INPUT', `${JSON.stringify(pointId)} names no time`);
  return t;
}
