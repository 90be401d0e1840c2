import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QmpClient } from '../../src/qemu/qmp-client.js';

/** A QEMU started paused with its QMP socket connected: a VM's block layer without a guest. */
export interface PausedQemu {
  child: ChildProcess;
  qmp: QmpClient;
  exited: Promise<void>;
}

/**
 * TCG, `-S`, no default devices: the block nodes (`-blockdev` objects) and devices given, as
 * vm-argv lays a VM's disks out. The QMP socket is `vm.qmp` in `dir`.
 */
export async function startPausedQemu(
  dir: string,
  blockdevs: Record<string, unknown>[],
  devices: string[],
): Promise<PausedQemu> {
  const sock = join(dir, 'vm.qmp');
  await rm(sock, { force: true });
  const args = [
    '-machine',
    'q35,accel=tcg',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-S',
    '-chardev',
    `socket,id=qmp,path=${sock},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    ...blockdevs.flatMap((n) => ['-blockdev', JSON.stringify(n)]),
    ...devices.flatMap((d) => ['-device', d]),
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  try {
    const qmp = await QmpClient.connect(sock, { connectTimeoutMs: 2000, retryUntilMs: 15_000 });
    return { child, qmp, exited };
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    throw e;
  }
}

/** Kills it by its pid (no-op for null or a QEMU already gone). */
export async function killPausedQemu(vm: PausedQemu | null): Promise<void> {
  if (vm === null) return;
  await vm.qmp.close();
  if (vm.child.exitCode === null && vm.child.signalCode === null && vm.child.pid !== undefined)
    process.kill(vm.child.pid, 'SIGKILL');
  await vm.exited;
}
