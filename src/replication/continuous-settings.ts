import { MamoriError } from '../core/mamori-error.js';
import type { ContinuousSettings } from '../store/records/replica-record.js';

/* `replicate enable --continuous`'s settings, checked (the RPO's are rpo-scheduler.ts's). */

/** Continuous replication's defaults and bounds: checkpoints 1 s apart, a 4 h window. */
const CHECKPOINT_DEFAULT_MS = 1_000;
const CHECKPOINT_LIMITS_MS = { min: 200, max: 60_000 };
const JOURNAL_DEFAULT_MS = 4 * 3600_000;
const JOURNAL_LIMITS_MS = { min: 60_000, max: 30 * 24 * 3600_000 };
/** Application-consistent checkpoints (guest frozen through its agent): every 15 min by default, 10 s to 24 h. */
const APP_CHECKPOINT_DEFAULT_MS = 15 * 60_000;
const APP_CHECKPOINT_LIMITS_MS = { min: 10_000, max: 24 * 3600_000 };
/** A continuous replication's RPO when none is given: what cycles are held to while its journal is down. */
export const CONTINUOUS_DEFAULT_RPO = '10s';

/**
 * `--continuous [--checkpoint 1s] [--journal 4h] [--app-checkpoint 15m|off]` as settings,
 * checked; null without --continuous. `guestAgent`: whether the VM has one; without it there
 * are no application-consistent checkpoints unless asked for, which is refused.
 */
export function continuousSettings(
  input: {
    continuous?: boolean;
    checkpoint?: string;
    journal?: string;
    appCheckpoint?: string;
  },
  guestAgent: boolean,
): ContinuousSettings | null {
  if (input.continuous !== true) {
    if (input.checkpoint !== undefined || input.journal !== undefined || input.appCheckpoint !== undefined)
      throw new MamoriError(
        'INVALID_INPUT',
        '--checkpoint, --journal and --app-checkpoint are settings of --continuous: give it too',
      );
    return null;
  }
  const checkpointMs = input.checkpoint === undefined ? CHECKPOINT_DEFAULT_MS : parseDuration(input.checkpoint);
  if (checkpointMs === null || checkpointMs < CHECKPOINT_LIMITS_MS.min || checkpointMs > CHECKPOINT_LIMITS_MS.max)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `checkpoint interval ${JSON.stringify(input.checkpoint)} is out of range: give ${CHECKPOINT_LIMITS_MS.min}ms to ${CHECKPOINT_LIMITS_MS.max / 1000}s (e.g. 1s)`,
    );
  const journalMs = input.journal === undefined ? JOURNAL_DEFAULT_MS : parseDuration(input.journal);
  if (journalMs === null || journalMs < JOURNAL_LIMITS_MS.min || journalMs > JOURNAL_LIMITS_MS.max)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `journal window ${JSON.stringify(input.journal)} is out of range: give 1m to 30d (e.g. 4h)`,
    );
  return { checkpointMs, journalMs, appCheckpointMs: appCheckpointMs(input.appCheckpoint, guestAgent) };
}

function appCheckpointMs(text: string | undefined, guestAgent: boolean): number | null {
  if (text === 'off') return null;
  if (text === undefined) return guestAgent ? APP_CHECKPOINT_DEFAULT_MS : null;
  if (!guestAgent)
    throw new MamoriError(
      'INVALID_INPUT',
      'application-consistent checkpoints freeze the guest through its agent, and this VM has none (vm create --guest-agent); leave --app-checkpoint out',
    );
  const ms = parseDuration(text);
  if (ms === null || ms < APP_CHECKPOINT_LIMITS_MS.min || ms > APP_CHECKPOINT_LIMITS_MS.max)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `application-consistent checkpoint interval ${JSON.stringify(text)} is out of range: give 10s to 24h (e.g. 15m), or off`,
    );
  return ms;
}

/** `500ms`, `1s`, `15m`, `4h`, `7d` (a bare number is seconds) in ms, or null. */
function parseDuration(text: string): number | null {
  const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 }[(m[2] ?? 's') as 's'];
}
