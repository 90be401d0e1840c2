/**
 * Guest writes beside the write log, for continuous replication's figures at rates the log's
 * writer cannot reach (it takes at most 1,000 records of 4 KiB a second): a shell loop in the
 * test guest, started through its agent, writing `mibPerSecond` MiB of random data (1 MiB
 * blocks, each synced) to its second disk (/dev/vdb) every second, round a region of
 * LOAD_REGION_MIB, and counting the bytes written in /run/load-written. The log goes on beside
 * it: it stays the ground truth of what the journal holds.
 */
import type { GuestAgent } from '../../src/qemu/guest-agent.js';
import { connectGuestAgent, guestSpawn, guestWait } from './guest-exec.js';

/** The region of the second disk the load goes round. */
export const LOAD_REGION_MIB = 2048;

export class GuestLoad {
  readonly #agent: GuestAgent;

  private constructor(agent: GuestAgent) {
    this.#agent = agent;
  }

  static async start(agentSocket: string, mibPerSecond: number): Promise<GuestLoad> {
    const agent = await connectGuestAgent(agentSocket);
    // One random MiB made once (the guest's urandom is slow under TCG); each block written
    // from it with a sync, paced to whole seconds.
    const script = [
      'export PATH=/bin:/sbin:/usr/bin:/usr/sbin',
      'head -c 1048576 /dev/urandom > /run/load-block',
      'i=0; w=0; echo 0 > /run/load-written',
      'while :; do',
      '  t=$(date +%s); k=0',
      `  while [ $k -lt ${mibPerSecond} ]; do`,
      `    dd if=/run/load-block of=/dev/vdb bs=1048576 count=1 seek=$((i % ${LOAD_REGION_MIB})) conv=fsync 2>/dev/null || exit 1`,
      '    i=$((i + 1)); k=$((k + 1)); w=$((w + 1048576))',
      '  done',
      '  echo $w > /run/load-written',
      '  while [ "$(date +%s)" = "$t" ]; do sleep 0.05; done',
      'done',
    ].join('\n');
    await guestSpawn(agent, '/bin/sh', ['-c', script]);
    return new GuestLoad(agent);
  }

  /** Bytes the load has written so far (updated each second). */
  async written(): Promise<number> {
    const pid = await guestSpawn(this.#agent, '/bin/cat', ['/run/load-written'], true);
    const r = await guestWait(this.#agent, pid, 30_000);
    return Number(r.out.trim()) || 0;
  }
}
