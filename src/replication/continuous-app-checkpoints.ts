import { CHECKPOINT_FLAG } from '../cdp/journal-format.js';
import type { ContinuousSession } from '../cdp/continuous-session.js';
import { SharedInstant } from '../cdp/continuous-tap.js';
import { guestFreezeHooks } from './guest-freeze.js';

/*
 * Application-consistent checkpoints of continuous replication (as Zerto's VSS checkpoints on a
 * schedule): the guests frozen through their agents, as a cycle freezes them (guest-freeze.ts:
 * the agent's fsfreeze hooks quiesce applications first), one checkpoint labelled
 * application-consistent, then thawed whatever happened. A consistency group's VMs are frozen
 * together and take the checkpoint at one shared instant. The checkpoints on the ordinary clock
 * go on meanwhile, crash-consistent as ever; a freeze that fails labels nothing.
 */

export interface AppCheckpointMember {
  vmName: string;
  session: ContinuousSession;
  /** The guest agent's socket on the host (SitePaths.vmRuntime). */
  agentSocket: string;
}

/** What one attempt did: when its checkpoint was taken, or why there was none. */
export interface AppCheckpointOutcome {
  at: string | null;
  error: string | null;
}

/** Freezes the members' guests, takes one labelled checkpoint of all of them (shared when `shared`), thaws. */
export async function takeAppConsistentCheckpoint(
  members: readonly AppCheckpointMember[],
  shared: boolean,
): Promise<AppCheckpointOutcome> {
  const hooks = members.map((m) => guestFreezeHooks(m.agentSocket));
  try {
    const frozen = await Promise.allSettled(hooks.map((h) => h.freeze()));
    const failed = frozen.findIndex((r) => r.status === 'rejected');
    if (failed >= 0)
      return {
        at: null,
        error: `${members[failed]!.vmName}'s guest agent did not freeze its file systems: ${String(
          ((frozen[failed] as PromiseRejectedResult).reason as Error)?.message ??
            (frozen[failed] as PromiseRejectedResult).reason,
        )}`,
      };
    const instant = shared ? new SharedInstant(members.reduce((n, m) => n + m.session.diskCount, 0)) : undefined;
    const taken = await Promise.all(
      members.map((m) => m.session.checkpointFlagged(CHECKPOINT_FLAG.applicationConsistent, instant)),
    );
    const missed = taken.findIndex((t) => !t);
    if (missed >= 0)
      return { at: null, error: `the checkpoint of ${members[missed]!.vmName} failed while its guest was frozen` };
    return { at: members[0]!.session.status.checkpointAt, error: null };
  } finally {
    // Every guest thawed, frozen or not: a thaw of a guest not frozen does nothing.
    await Promise.allSettled(hooks.map((h) => h.thaw()));
  }
}
