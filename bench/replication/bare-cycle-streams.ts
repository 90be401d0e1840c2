import type { Server } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { cycleStreamPath, spliceCycleStream } from '../../src/api/cycle-streams.js';
import type { ReplicaCycleServer } from '../../src/replication/replica-cycle-server.js';

/**
 * The benches' stand-in recovery sites take cycle streams as the site API does, minus its
 * token, role and ownership checks (the benches run one trusted source): the same path, the
 * same splice (framing, option guard) into the same long-lived staging daemon.
 */
export function acceptCycleStreams(https: Server, cycles: ReplicaCycleServer): void {
  https.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const m = cycleStreamPath(req.url);
    if (!m) return void socket.destroy();
    try {
      void spliceCycleStream(socket, head, cycles.stream(m.id, m.cycleId, m.disk)).catch(() => socket.destroy());
    } catch {
      socket.destroy();
    }
  });
}
