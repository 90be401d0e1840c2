import { spawn } from 'node:child_process';
import { MamoriError } from './mamori-error.js';

export interface RunOptions {
  /** Kill the child (SIGKILL) after this long; every child has a timeout. */
  timeoutMs?: number;
  /** Called with each chunk of stderr (progress parsers use it). */
  onStderr?: (chunk: string) => void;
  onStdout?: (chunk: string) => void;
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Exit codes that count as success (default [0]). */
  okCodes?: number[];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program with an argument array (never a shell string), reaps it, and
 * rejects with PROCESS_FAILED / PROCESS_TIMEOUT carrying the program's own stderr.
 */
export function runProcess(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const okCodes = options.okCodes ?? [0];
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      ...(options.cwd ? { cwd: options.cwd } : {}),
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      options.onStdout?.(c);
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      options.onStderr?.(c);
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(
        new MamoriError('PROCESS_FAILED', `could not run ${file}: ${err.message}`, { cause: err, details: { file } }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(
          new MamoriError('PROCESS_TIMEOUT', `${file} did not finish within ${timeoutMs} ms and was killed`, {
            details: { file, args },
          }),
        );
        return;
      }
      const exit = code ?? (signal ? 128 : 1);
      if (!okCodes.includes(exit)) {
        const why = stderr.trim().split('\n').slice(-3).join(' ') || `exit ${exit}${signal ? ` (${signal})` : ''}`;
        reject(
          new MamoriError('PROCESS_FAILED', `${file} failed: ${why}`, {
            details: { file, args, exitCode: exit, stderr },
          }),
        );
        return;
      }
      resolve({ code: exit, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}
