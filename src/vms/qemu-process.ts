import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';

export const QEMU_SYSTEM = process.env['MAMORI_QEMU'] ?? 'qemu-system-x86_64';

/**
 * Starts QEMU with -daemonize: the launcher process exits once QEMU has opened its
 * devices and sockets, leaving the VM re-parented to init so it outlives the server.
 * Errors before that point come back on stderr with a non-zero exit.
 */
export async function launchDaemonizedQemu(argv: string[], pidFile: string, timeoutMs = 60_000): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(QEMU_SYSTEM, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new MamoriError('QEMU_START_FAILED', `QEMU did not finish starting within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(
        new MamoriError(
          'QEMU_START_FAILED',
          `could not run ${QEMU_SYSTEM}: ${e.message}; run 'make setup' to install QEMU`,
          { cause: e },
        ),
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else
        reject(
          new MamoriError('QEMU_START_FAILED', `QEMU refused to start: ${lastLines(stderr)}`, {
            details: { exitCode: code, stderr },
          }),
        );
    });
  });
  const pid = await readPidFile(pidFile);
  if (pid === null) throw new MamoriError('QEMU_START_FAILED', `QEMU started but wrote no pid file at ${pidFile}`);
  return pid;
}

export async function readPidFile(pidFile: string): Promise<number | null> {
  try {
    const n = Number((await readFile(pidFile, 'utf8')).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * True only if `pid` is alive and is the QEMU of this VM (its command line carries the
 * VM's UUID), so a recycled pid is never mistaken for our VM.
 */
export async function isQemuOfVm(pid: number, vmId: string): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // A zombie ('Z') has exited; its cmdline may still read back briefly.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && cmdline.split('\0').includes(vmId);
  } catch {
    return false;
  }
}

export async function waitForExit(pid: number, vmId: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isQemuOfVm(pid, vmId))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !(await isQemuOfVm(pid, vmId));
}

function lastLines(text: string): string {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.slice(-3).join(' ') || 'no message';
}
