import { spawn, type ChildProcess } from 'node:child_process';
import type { ZfsHost } from './zfs-commands.js';
import { ZfsAdapterError } from './zfs-adapter-error.js';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  spawnError?: Error;
}

function exited(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve) => {
    let stderr = '';
    let spawnError: Error | undefined;
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr = (stderr + c).slice(-8000);
    });
    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('close', (code, signal) => resolve({ code, signal, stderr, ...(spawnError ? { spawnError } : {}) }));
  });
}

function failed(x: Exit): boolean {
  return x.spawnError !== undefined || x.code !== 0;
}

function why(x: Exit): string {
  if (x.spawnError) return x.spawnError.message;
  return (
    x.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' ') ||
    (x.signal ? `killed by ${x.signal}` : `exit ${x.code}`)
  );
}

/**
 * `zfs send SENDARGS` on one host piped through this process into `zfs recv RECVARGS` on
 * the other: the bytes pass through node, so they are counted as they go (progress, and
 * syncOnce's bytesSent) without a `pv` on either host. Both children stay in the
 * adapter's process group: when mamori kills the group, both die, zfs recv reads a
 * truncated stream and the target stays at its last complete snapshot.
 *
 * (zfs-fuse's daemon, not the `zfs recv` client, reads the stream, from the pipe the
 * client hands it. Killing only the client does not stop a receive whose writer goes on,
 * which is why a failed recv here also stops the send.)
 */
export async function sendReceive(
  from: ZfsHost,
  sendArgs: readonly string[],
  to: ZfsHost,
  recvArgs: readonly string[],
  onBytes: (sent: number) => void,
): Promise<number> {
  const [sendFile, sendRest] = from.argv('zfs', ['send', ...sendArgs]);
  const [recvFile, recvRest] = to.argv('zfs', ['recv', ...recvArgs]);
  const env = { ...process.env, LC_ALL: 'C' };
  const send = spawn(sendFile, sendRest, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const recv = spawn(recvFile, recvRest, { stdio: ['pipe', 'ignore', 'pipe'], env });
  const sendExit = exited(send);
  const recvExit = exited(recv);
  let sent = 0;

  send.stdout!.on('data', (chunk: Buffer) => {
    sent += chunk.length;
    onBytes(sent);
    if (!recv.stdin!.write(chunk)) send.stdout!.pause();
  });
  recv.stdin!.on('drain', () => send.stdout!.resume());
  send.stdout!.on('end', () => recv.stdin!.end());
  // EPIPE: recv is gone; its exit status says why. Stop the send rather than feed nobody.
  recv.stdin!.on('error', () => send.kill('SIGTERM'));
  void recvExit.then((x) => {
    if (failed(x)) send.kill('SIGTERM');
  });

  const [s, r] = await Promise.all([sendExit, recvExit]);
  if (!failed(s) && !failed(r)) return sent;

  const details = {
    sendCommand: [sendFile, ...sendRest].join(' '),
    recvCommand: [recvFile, ...recvRest].join(' '),
    bytesSent: sent,
    sendError: failed(s) ? why(s) : null,
    recvError: failed(r) ? why(r) : null,
  };
  for (const [x, host] of [
    [s, from],
    [r, to],
  ] as const) {
    if (host.side !== 'peer') continue;
    if (
      x.spawnError ||
      /failed to initialize ZFS library|zfs-fuse daemon is running/i.test(x.stderr) ||
      (x.code === 255 && host.argv('zfs', [])[0] !== 'zfs')
    ) {
      throw new ZfsAdapterError(
        'PEER_UNREACHABLE',
        `the peer host could not ${host === to ? 'receive' : 'send'} the stream: ${why(x)}`,
        details,
      );
    }
  }
  // The side that failed first is the cause; the other only saw the broken pipe.
  const cause =
    failed(r) && !/broken pipe|invalid backup stream|failed to read from stream/i.test(r.stderr)
      ? `zfs recv: ${why(r)}`
      : failed(s)
        ? `zfs send: ${why(s)}`
        : `zfs recv: ${why(r)}`;
  throw new ZfsAdapterError(
    'STREAM_FAILED',
    `the replication stream failed after ${sent} bytes (${cause}); the target keeps its last complete snapshot`,
    details,
  );
}
