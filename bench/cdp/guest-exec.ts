/**
 * Running programs in a test guest through its agent (`guest-exec`), for the benches that load
 * a guest once its protection runs: the agent's channel is a unix socket of the VM's QEMU at
 * the site (SitePaths.vmRuntime(vmId).guestAgentSocket).
 */
import { GuestAgent } from '../../src/qemu/guest-agent.js';
import { waitFor } from '../bench-common.js';

/** The guest's agent, once it answers (it starts with the guest). */
export async function connectGuestAgent(socket: string): Promise<GuestAgent> {
  return waitFor(
    'the guest agent',
    async () => {
      const ga = await GuestAgent.connect(socket).catch(() => undefined);
      if (ga === undefined) return undefined;
      try {
        await ga.sync(2_000);
        return ga;
      } catch {
        ga.close();
        return undefined;
      }
    },
    120_000,
    500,
  );
}

/** Starts `path args` in the guest; its pid there. */
export async function guestSpawn(agent: GuestAgent, path: string, args: string[], capture = false): Promise<number> {
  const { pid } = await agent.execute<{ pid: number }>(
    'guest-exec',
    { path, arg: args, 'capture-output': capture },
    10_000,
  );
  return pid;
}

/** Waits for a process started with capture to end; its exit code and standard output. */
export async function guestWait(
  agent: GuestAgent,
  pid: number,
  timeoutMs: number,
): Promise<{ code: number; out: string }> {
  const s = await waitFor(
    `guest process ${pid}`,
    async () => {
      const st = await agent.execute<{ exited: boolean; exitcode?: number; 'out-data'?: string }>(
        'guest-exec-status',
        { pid },
        10_000,
      );
      return st.exited ? st : undefined;
    },
    timeoutMs,
    500,
  );
  return { code: s.exitcode ?? -1, out: Buffer.from(s['out-data'] ?? '', 'base64').toString('utf8') };
}
