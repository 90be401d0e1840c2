import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { parseSerialAcks } from '../../src/guest/writelog-verifier.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import type { SiteProcess } from './site-process.js';

/*
 * The ground truth of continuous replication tests: what the test guest had acknowledged, sampled
 * on the host's clock, against the write log of the replica read back at a point in time.
 */

export interface VerifiedInstant {
  point: { id: string; time: string };
  report: { consistent: boolean; gapFreePrefix: number; lastSequence: number | null; lastTime: string | null };
}

/** The guest's acknowledged records over time (the serial console's `mamori-wl ack` lines). */
export class AckSamples {
  readonly #serialLog: string;
  readonly #samples: { at: number; n: number }[] = [];

  constructor(serialLog: string) {
    this.#serialLog = serialLog;
  }

  /** Reads the highest acknowledged record now. */
  async sample(): Promise<number> {
    // A loop, not Math.max(...acks): ten minutes of records overflow the call's arguments.
    let n = 0;
    for (const a of parseSerialAcks(await readFile(this.#serialLog, 'utf8').catch(() => ''))) n = Math.max(n, a);
    this.#samples.push({ at: Date.now(), n });
    return n;
  }

  /** The most the guest had acknowledged by `ms` (epoch ms), as far as the samples tell. */
  ackedBy(ms: number): number {
    let n = 0;
    for (const s of this.#samples) if (s.at <= ms) n = Math.max(n, s.n);
    return n;
  }
}

/**
 * `replicate verify VM --at T` at site `site`, checked: rounded down to a checkpoint at most
 * `slackMs` before T, a consistent log holding every record acknowledged before that checkpoint.
 */
export async function verifyInstant(
  site: SiteProcess,
  vm: string,
  at: string,
  acks: AckSamples,
  slackMs = 2_500,
): Promise<VerifiedInstant> {
  const v = await site.cliJson<VerifiedInstant>('replicate', 'verify', vm, '--at', at);
  const t = Date.parse(at);
  const cp = Date.parse(v.point.time);
  assert.ok(cp <= t && t - cp <= slackMs, `asked ${at}, got the checkpoint of ${v.point.time}`);
  assert.equal(v.report.consistent, true, `${at}: ${JSON.stringify(v.report)}`);
  const before = acks.ackedBy(cp);
  assert.ok(
    v.report.gapFreePrefix >= before,
    `${v.point.time} holds ${v.report.gapFreePrefix} records; the guest had acknowledged ${before} before it`,
  );
  return v;
}

/** Waits until the VM's journal streams and the recovery site holds a checkpoint (of a base other than `notBase`). */
export async function waitStreaming(
  site: SiteProcess,
  vm: string,
  opts: { notBase?: string; timeoutMs?: number } = {},
): Promise<ReplicationStatus> {
  return site.waitFor(
    `${vm}'s journal streams${opts.notBase ? ` over a point other than ${opts.notBase}` : ''}`,
    async () => {
      const s = await site.cliJson<ReplicationStatus>('replicate', 'status', vm);
      const j = s.journal;
      return j?.state === 'streaming' && j.shippedAt !== null && j.basePointId !== opts.notBase ? s : undefined;
    },
    opts.timeoutMs ?? 180_000,
  );
}
