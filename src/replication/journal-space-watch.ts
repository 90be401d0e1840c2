import type { Logger } from '../core/logger.js';
import { formatBytes } from '../core/format-bytes.js';
import type { JournalForecast } from '../cdp/journal-forecast.js';
import type { IncidentLog } from '../events/incident-log.js';
import { JOURNAL_SPACE } from '../events/incident-kinds.js';

/** How often the recovery site looks at its journals' forecasts. */
const DEFAULT_CHECK_MS = 60_000;
/** An open incident clears once the window takes at most this share of the room (no flapping at the edge). */
const CLEAR_BELOW = 0.9;

export interface JournalSpaceWatchDeps {
  /** The replicas this site holds (id, VM name, source site). */
  replicas: () => Promise<{ id: string; vmName: string; sourceSite: string }[]>;
  /** A replica's journal forecast, or null without a journal (ReplicaService.journalForecast). */
  forecast: (id: string) => Promise<JournalForecast | null>;
  incidents: IncidentLog;
  log: Logger;
  checkMs?: number;
}

/*
 * The recovery site's watch on its continuous replicas' journals: every minute, each journal's
 * forecast (cdp/journal-forecast.ts) says whether a whole window of writes, at the rate the
 * journal has grown, fits in the room it has here. One that does not opens an incident naming
 * the rate, the need and the room, before the filesystem fills (when it would, the journal's
 * writes fail and the source falls back to cycles); it clears when the forecast fits again, or
 * the journal is gone.
 */
export class JournalSpaceWatch {
  readonly #d: JournalSpaceWatchDeps;
  #timer: NodeJS.Timeout | null = null;
  #checking = false;

  constructor(deps: JournalSpaceWatchDeps) {
    this.#d = deps;
  }

  start(): void {
    this.#timer = setInterval(() => void this.check(), this.#d.checkMs ?? DEFAULT_CHECK_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One look at every replica's journal (the timer's; tests call it). */
  async check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      const held = new Set<string>();
      for (const r of await this.#d.replicas()) {
        held.add(`replica:${r.id}`);
        const f = await this.#d.forecast(r.id).catch((e: unknown) => {
          this.#d.log.warn({ replica: r.id, err: (e as Error).message }, "could not forecast a replica's journal");
          return undefined;
        });
        if (f === undefined) continue;
        await this.#judge(r, f);
      }
      // A replica deleted meanwhile takes its incident with it.
      for (const open of await this.#d.incidents.openOfKind(JOURNAL_SPACE))
        if (!held.has(open.target)) await this.#d.incidents.clear(JOURNAL_SPACE, open.target);
    } finally {
      this.#checking = false;
    }
  }

  async #judge(r: { id: string; vmName: string; sourceSite: string }, f: JournalForecast | null): Promise<void> {
    const target = `replica:${r.id}`;
    if (f === null || f.neededBytes === null) {
      if (f === null) await this.#d.incidents.clear(JOURNAL_SPACE, target);
      return;
    }
    if (!f.fits) {
      await this.#d.incidents.raiseOrUpdate({
        kind: JOURNAL_SPACE,
        target,
        severity: 'warning',
        message:
          `the journal of ${r.vmName} (from ${r.sourceSite}) grows ${formatBytes(f.bytesPerSecond ?? 0)}/s: ` +
          `its ${formatWindow(f.windowSeconds)} window needs ${formatBytes(f.neededBytes)}, ` +
          `and it has ${formatBytes(f.availableBytes)} here (${formatBytes(f.bytes)} held, the rest free)`,
        details: {
          replica: r.id,
          vm: r.vmName,
          source: r.sourceSite,
          bytesPerSecond: f.bytesPerSecond,
          windowSeconds: f.windowSeconds,
          neededBytes: f.neededBytes,
          availableBytes: f.availableBytes,
        },
      });
    } else if (f.neededBytes <= f.availableBytes * CLEAR_BELOW) {
      await this.#d.incidents.clear(JOURNAL_SPACE, target);
    }
  }
}

function formatWindow(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
