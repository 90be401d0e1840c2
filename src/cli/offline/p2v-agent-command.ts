import { parseArgs } from 'node:util';
import { P2vAgent } from '../../convert/p2v-agent.js';
import { P2V_DEFAULT_PORT } from '../../convert/p2v-protocol.js';
import { MamoriError } from '../../core/mamori-error.js';
import { formatBytes, printJson } from '../output.js';

export const P2V_AGENT_USAGE = `mamori p2v-agent --device /dev/sdX [--listen ADDR] [--port N] [--freeze-limit SECONDS]
  Run on the machine to convert: serves the disk read-only over NBD with TLS on ADDR:N
  (default 0.0.0.0:${P2V_DEFAULT_PORT}; the control channel is on N+1) until stopped (Ctrl-C).
  It prints an agent key; on the site run
    mamori convert nbd://THIS-HOST:N --agent-key KEY --name VM
  The site copies in passes, resending only changed chunks, and runs the last pass with the
  disk's mounted filesystems frozen (at most --freeze-limit seconds, default 120).`;

/** p2v-agent's options (also what src/cli/parse-only.ts checks a command against). */
export const P2V_AGENT_OPTIONS = {
  device: { type: 'string' },
  listen: { type: 'string' },
  port: { type: 'string' },
  'freeze-limit': { type: 'string' },
} as const;

/** `mamori p2v-agent`: local, needs no site; runs until SIGINT/SIGTERM, then thaws and cleans up. */
export async function p2vAgentCommand(argv: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: P2V_AGENT_OPTIONS,
  });
  if (positionals.length > 0 || !values.device) throw new MamoriError('INVALID_INPUT', `usage: ${P2V_AGENT_USAGE}`);
  const port = values.port === undefined ? P2V_DEFAULT_PORT : Number(values.port);
  const freezeLimit = values['freeze-limit'] === undefined ? 120 : Number(values['freeze-limit']);
  if (!Number.isInteger(freezeLimit) || freezeLimit < 5 || freezeLimit > 3600)
    throw new MamoriError('OUT_OF_RANGE', '--freeze-limit must be 5-3600 seconds');
  const log = (line: string): void => void process.stderr.write(`p2v-agent: ${line}\n`);
  const agent = await P2vAgent.start({
    device: values.device,
    host: values.listen ?? '0.0.0.0',
    port,
    freezeLimitSeconds: freezeLimit,
    log,
  });
  const info = {
    url: agent.url,
    agentKey: agent.key,
    device: values.device,
    sizeBytes: agent.sizeBytes,
    caFingerprint: agent.caFingerprint,
  };
  if (json) printJson(info);
  else {
    process.stdout.write(`serving ${values.device} (${formatBytes(agent.sizeBytes)}) read-only at ${agent.url}\n`);
    process.stdout.write(`agent key: ${agent.key}\n`);
    process.stdout.write(`on the site: mamori convert ${agent.url} --agent-key ${agent.key} --name VM\n`);
  }
  await new Promise<void>((resolve) => {
    const end = (sig: string): void => {
      log(`${sig}: stopping`);
      void agent.stop().finally(resolve);
    };
    process.once('SIGINT', () => end('SIGINT'));
    process.once('SIGTERM', () => end('SIGTERM'));
  });
}
