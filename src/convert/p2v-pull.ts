import type { NbdClient } from '../nbd/nbd-client.js';
import { withTargetDiskExport } from './target-disk-export.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { convergeCopy, type ConvergePass, type ConvergeResult } from './p2v-converge.js';
import type { P2vAgentClient } from './p2v-agent-client.js';
import { P2V_CHUNK } from './p2v-protocol.js';

export interface PullOptions {
  /** Scratch folder for the target's storage daemon (its sockets and pid file). */
  runDir: string;
  convergeBelowBytes: number;
  maxPasses?: number;
  onPass?: (p: ConvergePass) => Promise<void>;
  /** Fraction of the whole copy done, roughly: the first pass is most of it. */
  onProgress?: (fraction: number) => void;
}

/**
 * Pulls a running machine's disk from its P2V agent into a new image of the pool: the image
 * is written through QEMU's own block layer (a qemu-storage-daemon exporting it on a private
 * unix socket), and read from the agent's TLS NBD export in converging passes.
 */
export async function pullFromAgent(agent: P2vAgentClient, disk: DiskRecord, o: PullOptions): Promise<ConvergeResult> {
  return withTargetDiskExport(disk, o.runDir, async (target) => {
    let source: NbdClient | null = null;
    try {
      source = await agent.openNbd();
      const size = agent.hello.sizeBytes;
      return await convergeCopy(agent, source, target, {
        sizeBytes: size,
        chunkSize: P2V_CHUNK,
        convergeBelowBytes: o.convergeBelowBytes,
        maxPasses: o.maxPasses ?? 8,
        ...(o.onPass ? { onPass: o.onPass } : {}),
        onBytes: (pass, done, total) =>
          o.onProgress?.(pass === 1 ? 0.85 * (done / Math.max(total, 1)) : 0.85 + 0.1 * Math.min(1, (pass - 1) / 8)),
      });
    } finally {
      await source?.disconnect().catch(() => undefined);
    }
  });
}
