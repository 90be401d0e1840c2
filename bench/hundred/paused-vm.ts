import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { QmpClient } from '../../src/qemu/qmp-client.js';

/**
 * A source VM as bench/replication starts one: QEMU paused before any guest code runs (-S),
 * TCG, the smallest memory, disk0 a qcow2 node under virtio-blk `disk0-dev`. A replication
 * cycle touches only the block layer, so a hundred of these cost memory, not CPU; the guest's
 * writes are qemu-io commands through HMP into the device's own BlockBackend.
 */
export class PausedVm {
  readonly child: ChildProcess;
  readonly qmp: QmpClient;

  private constructor(child: ChildProcess, qmp: QmpClient) {
    this.child = child;
    this.qmp = qmp;
  }

  static async start(dir: string, image: string): Promise<PausedVm> {
    const sock = join(dir, 'qmp.sock');
    const child = spawn(
      'qemu-system-x86_64',
      [
        ...['-machine', 'q35', '-accel', 'tcg', '-smp', '1', '-m', '32M'],
        ...['-nodefaults', '-no-user-config', '-display', 'none', '-S'],
        ...['-chardev', `socket,id=qmp,path=${sock},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control'],
        '-blockdev',
        JSON.stringify({ driver: 'file', filename: image, 'node-name': 'disk0-file', cache: { direct: false } }),
        '-blockdev',
        JSON.stringify({ driver: 'qcow2', file: 'disk0-file', 'node-name': 'disk0' }),
        ...['-device', 'virtio-blk-pci,drive=disk0,id=disk0-dev'],
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    try {
      const qmp = await QmpClient.connect(sock, { connectTimeoutMs: 5_000, retryUntilMs: 30_000 });
      return new PausedVm(child, qmp);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
  }

  /** A write into the running QEMU through its block layer, as the guest's would arrive. */
  async qemuIo(sub: string): Promise<void> {
    const out = (await this.qmp.execute(
      'human-monitor-command',
      { 'command-line': `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "${sub}"` },
      { timeoutMs: 60_000 },
    )) as string;
    if (/error|fail|cannot/i.test(out)) throw new Error(`qemu-io ${sub}: ${out}`);
  }

  /** quit over QMP, SIGKILL if it has not exited within 10 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    await this.qmp.execute('quit', undefined, { timeoutMs: 10_000 }).catch(() => undefined);
    await this.qmp.close().catch(() => undefined);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
}
