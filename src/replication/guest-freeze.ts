import { GuestAgent } from '../qemu/guest-agent.js';
import type { GuestFreezeHooks } from './fleecing-point.js';

/** A guest whose agent does not answer this fast is taken as having none this cycle. */
const SYNC_MS = 1_000;
/** qemu-ga runs the fsfreeze hooks (quiescing applications) before FIFREEZE: give them time. */
const FREEZE_MS = 10_000;
const THAW_MS = 10_000;

/**
 * Freeze and thaw through qemu-guest-agent around the fleecing instant, as vSphere's quiesced
 * snapshots and Proxmox's `agent: fs-freeze` do. A freeze that fails or times out is thawed
 * at once (its outcome is unknown: it may have frozen), and the point falls back to crash
 * consistency; the guest is never left frozen by us.
 */
export function guestFreezeHooks(channel: string): GuestFreezeHooks {
  let agent: GuestAgent | null = null;
  const thaw = async (): Promise<void> => {
    const a = agent;
    agent = null;
    if (a === null) return;
    try {
      await a.execute('guest-fsfreeze-thaw', undefined, THAW_MS);
    } finally {
      a.close();
    }
  };
  return {
    freeze: async () => {
      const a = await GuestAgent.connect(channel);
      try {
        await a.sync(SYNC_MS);
      } catch (e) {
        a.close();
        throw e;
      }
      agent = a;
      try {
        await a.execute('guest-fsfreeze-freeze', undefined, FREEZE_MS);
      } catch (e) {
        await thaw().catch(() => undefined);
        throw e;
      }
    },
    thaw,
  };
}
