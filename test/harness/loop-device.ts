import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { runProcess } from '../../src/core/run-process.js';

/** A loop device over a file in the test's folder; detached by its own name afterwards. */
export class LoopDevice {
  readonly device: string;
  readonly file: string;
  private constructor(device: string, file: string) {
    this.device = device;
    this.file = file;
  }

  static async create(dir: string, name: string, sizeMiB: number): Promise<LoopDevice> {
    const file = join(dir, `${name}.lun`);
    await runProcess('truncate', ['-s', `${sizeMiB}M`, file]);
    const { stdout } = await runProcess('losetup', ['--find', '--show', file], { timeoutMs: 10_000 });
    return new LoopDevice(stdout.trim(), file);
  }

  async detach(): Promise<void> {
    await runProcess('losetup', ['-d', this.device], { timeoutMs: 10_000 }).catch(() => undefined);
    await rm(this.file, { force: true });
  }
}
