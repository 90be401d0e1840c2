import { spawn } from 'node:child_process';
import { MamoriError } from '../core/mamori-error.js';

/** What one adapter run gave back: its stdout whole, stderr's tail, and how it ended. */
export interface AdapterRun {
  stdout: string;
  stderrTail: string[];
  exitCode: number | null;
  signal: string | null;
}

const STDOUT_LIMIT = 16 * 1024 * 1024;
const STDERR_TAIL_LINES = 40;

/**
 * Runs an adapter executable once: the request on stdin, stdout gathered, stderr read line by
 * line (JSON progress lines go to `onProgress`, the rest is kept as a tail for error messages).
 * The adapter runs in its own process group, and the whole group is killed at the time limit:
 * an adapter's `zfs send | ssh ... zfs recv` must not outlive it. Never a shell.
 */
export function runAdapterProcess(
  path: string,
  request: string,
  opts: {
    timeoutMs: number;
    command: string;
    onProgress?: (fraction: number | null, message: string) => void;
    env?: NodeJS.ProcessEnv;
  },
): Promise<AdapterRun> {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(path, [], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: opts.env ?? process.env });
    } catch (e) {
      reject(spawnError(path, e));
      return;
    }
    let stdout = '';
    let overflow = false;
    let partial = '';
    const tail: string[] = [];
    let timedOut = false;
    const killGroup = (): void => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, opts.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      if (stdout.length + c.length > STDOUT_LIMIT) {
        overflow = true;
        killGroup();
        return;
      }
      stdout += c;
    });
    const line = (l: string): void => {
      if (l.trim() === '') return;
      try {
        const p = JSON.parse(l) as { progress?: unknown; message?: unknown };
        if (p && typeof p === 'object' && ('progress' in p || 'message' in p)) {
          opts.onProgress?.(
            typeof p.progress === 'number' && p.progress >= 0 && p.progress <= 1 ? p.progress : null,
            typeof p.message === 'string' ? p.message : '',
          );
          return;
        }
      } catch {
        // free text
      }
      tail.push(l.length > 500 ? `${l.slice(0, 500)}...` : l);
      if (tail.length > STDERR_TAIL_LINES) tail.shift();
    };
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      const parts = (partial + c).split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) line(l);
    });
    // An adapter that exits without reading stdin must not crash mamori with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(request);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(spawnError(path, e));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (partial) line(partial);
      if (timedOut) {
        reject(
          new MamoriError(
            'ADAPTER_TIMEOUT',
            `the adapter ${path} did not answer ${opts.command} within ${Math.round(opts.timeoutMs / 1000)} s and was killed${tail.length ? `; it last said: ${tail.slice(-3).join(' / ')}` : ''}`,
            { details: { adapter: path, command: opts.command, stderr: tail } },
          ),
        );
        return;
      }
      if (overflow) {
        reject(
          new MamoriError(
            'ADAPTER_FAILED',
            `the adapter ${path} wrote more than ${STDOUT_LIMIT} bytes to stdout for ${opts.command}; a response is one JSON object`,
            { details: { adapter: path, command: opts.command } },
          ),
        );
        return;
      }
      resolve({ stdout, stderrTail: tail, exitCode: code, signal });
    });
  });
}

function spawnError(path: string, e: unknown): MamoriError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT')
    return new MamoriError(
      'ADAPTER_NOT_FOUND',
      `no adapter at ${path}: give the path of an executable, or the name of a bundled adapter (zfs)`,
      { cause: e, details: { adapter: path } },
    );
  if (code === 'EACCES')
    return new MamoriError('ADAPTER_NOT_FOUND', `the adapter ${path} is not executable: chmod +x it`, {
      cause: e,
      details: { adapter: path },
    });
  return new MamoriError('ADAPTER_FAILED', `could not run the adapter ${path}: ${(e as Error).message}`, {
    cause: e,
    details: { adapter: path },
  });
}
