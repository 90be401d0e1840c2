import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';

export type Accelerator = 'kvm' | 'tcg';

export interface AccelProbeOptions {
  /** Environment to read MAMORI_ACCEL from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * How long the KVM guest gets to print its message (default 2000 ms). A working KVM prints
   * in well under 100 ms; on hosts where KVM guests hang it took ~5 s, so the margin is wide.
   */
  timeoutMs?: number;
  qemuBinary?: string;
  /** The KVM device to check (default /dev/kvm); tests point it elsewhere. */
  kvmDevice?: string;
}

export interface AccelProbeResult {
  accel: Accelerator;
  reason: string;
  probeMs: number;
}

export interface BootProbeResult {
  printed: boolean;
  /** Why it did not print (timeout, or QEMU's own error); empty when it printed. */
  reason: string;
  elapsedMs: number;
}

export const PROBE_MESSAGE = 'MAMORI-PROBE-OK';
const DEFAULT_TIMEOUT_MS = 2_000;
/** How long to wait for a killed probe QEMU to be reaped before giving up on it. */
const REAP_GRACE_MS = 3_000;

/**
 * A 512-byte real-mode boot sector that writes "MAMORI-PROBE-OK\r\n" to COM1 (0x3f8)
 * and halts:
 *   cld; xor ax,ax; mov ds,ax; mov dx,0x3f8; mov si,0x7c17
 *   next: lodsb; test al,al; jz done; out dx,al; jmp next
 *   done: cli; hlt; jmp done
 * The message starts at offset 23 (0x7c17), NUL-terminated; 0x55 0xAA at 510.
 */
export function buildProbeBootSector(): Uint8Array {
  const code = [
    0xfc, 0x31, 0xc0, 0x8e, 0xd8, 0xba, 0xf8, 0x03, 0xbe, 0x17, 0x7c, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8,
    0xfa, 0xf4, 0xeb, 0xfc,
  ];
  const sector = new Uint8Array(512);
  sector.set(code, 0);
  sector.set(Buffer.from(`${PROBE_MESSAGE}\r\n\0`, 'ascii'), 0x17);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/**
 * Decides between KVM and TCG. MAMORI_ACCEL=kvm|tcg wins; otherwise KVM only if
 * /dev/kvm is usable AND a tiny guest boots under it within the timeout (on some hosts
 * /dev/kvm exists yet guests hang). Nothing is cached; callers cache.
 */
export async function probeAccelerator(options: AccelProbeOptions = {}): Promise<AccelProbeResult> {
  const started = performance.now();
  const elapsed = (): number => Math.round(performance.now() - started);
  const env = options.env ?? process.env;
  const forced = env['MAMORI_ACCEL'];
  if (forced !== undefined && forced !== '') {
    if (forced !== 'kvm' && forced !== 'tcg') {
      throw new MamoriError(
        'INVALID_INPUT',
        `MAMORI_ACCEL must be "kvm" or "tcg", not "${forced}"; unset it to probe.`,
        { details: { variable: 'MAMORI_ACCEL', value: forced, allowed: ['kvm', 'tcg'] } },
      );
    }
    return { accel: forced, reason: `MAMORI_ACCEL=${forced} is set in the environment`, probeMs: elapsed() };
  }
  const device = options.kvmDevice ?? '/dev/kvm';
  try {
    await access(device, fsConstants.R_OK | fsConstants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : `is not accessible (${code ?? 'error'})`;
    return { accel: 'tcg', reason: `${device} ${why}`, probeMs: elapsed() };
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const boot = await bootProbeSector({
    accel: 'kvm',
    timeoutMs,
    ...(options.qemuBinary === undefined ? {} : { qemuBinary: options.qemuBinary }),
  });
  if (boot.printed) {
    return { accel: 'kvm', reason: `a KVM guest printed its boot message in ${boot.elapsedMs} ms`, probeMs: elapsed() };
  }
  return { accel: 'tcg', reason: `${device} is present but KVM is not functional: ${boot.reason}`, probeMs: elapsed() };
}

/**
 * Boots the probe sector under the given accelerator and reports whether it printed.
 * The QEMU child is killed by its own pid as soon as the message appears or the time
 * is up, reaped, and its temp dir removed.
 */
export async function bootProbeSector(options: {
  accel: Accelerator;
  timeoutMs?: number;
  qemuBinary?: string;
}): Promise<BootProbeResult> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-accel-'));
  try {
    const image = join(dir, 'probe.img');
    await writeFile(image, buildProbeBootSector());
    return await runProbeQemu(
      options.qemuBinary ?? 'qemu-system-x86_64',
      options.accel,
      image,
      options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function runProbeQemu(binary: string, accel: Accelerator, image: string, timeoutMs: number): Promise<BootProbeResult> {
  const args = [
    '-machine',
    `pc,accel=${accel}`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-m',
    '16',
    '-drive',
    `file=${image},format=raw,if=ide`,
    '-serial',
    'stdio',
  ];
  const started = performance.now();
  // runProcess cannot stop a child early; the probe must kill QEMU the moment it has its answer.
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let outcome: BootProbeResult | null = null;
    const finish = (result: BootProbeResult): void => {
      if (outcome !== null) return;
      outcome = result;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.kill('SIGKILL');
        // If the kernel holds the process (a stuck KVM vCPU), do not wait forever for the reap.
        reapTimer = setTimeout(() => resolve(result), REAP_GRACE_MS);
      } else {
        resolve(result);
      }
    };
    let reapTimer: NodeJS.Timeout | undefined;
    const elapsed = (): number => Math.round(performance.now() - started);
    const timer = setTimeout(() => {
      finish({
        printed: false,
        reason: `the ${accel} guest did not print its boot message within ${timeoutMs} ms`,
        elapsedMs: elapsed(),
      });
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes(PROBE_MESSAGE)) finish({ printed: true, reason: '', elapsedMs: elapsed() });
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', (err) => {
      finish({ printed: false, reason: `could not run ${binary}: ${err.message}`, elapsedMs: elapsed() });
      if (outcome !== null) resolve(outcome);
    });
    child.on('close', (code, signal) => {
      const why = stderr.trim().split('\n').slice(-3).join(' ') || `exit ${code ?? signal ?? '?'}`;
      finish({ printed: false, reason: `QEMU exited before the boot message: ${why}`, elapsedMs: elapsed() });
      clearTimeout(reapTimer);
      if (outcome !== null) resolve(outcome);
    });
  });
}
