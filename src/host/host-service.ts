import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { CHECKOUT_ROOT } from '../core/checkout-root.js';
import type { Logger } from '../core/logger.js';
import { probeAccelerator, type AccelProbeResult } from '../qemu/accel-probe.js';
import { readQemuHostInfo, resolveMachineType, type QemuHostInfo } from '../qemu/qemu-host-info.js';
import type { HostInfoView } from './host-info-view.js';
import type { HostRuntime } from './host-runtime.js';

async function readable(path: string): Promise<boolean> {
  return access(path, constants.R_OK).then(
    () => true,
    () => false,
  );
}

export function defaultGuestDir(env = process.env): string {
  return env['MAMORI_GUEST_DIR'] ?? join(CHECKOUT_ROOT, '.cache', 'guest');
}

/**
 * Facts about this host, found once per server process: the accelerator (a functional
 * probe, since /dev/kvm existing does not mean guests run), QEMU's version and machine
 * types, firmware, and the test guest.
 */
export class HostService implements HostRuntime {
  #siteName: string;
  #guestDir: string;
  #log: Logger;
  #accel: Promise<AccelProbeResult> | null = null;
  #info: Promise<QemuHostInfo> | null = null;

  constructor(opts: { siteName: string; guestDir?: string; log: Logger }) {
    this.#siteName = opts.siteName;
    this.#guestDir = opts.guestDir ?? defaultGuestDir();
    this.#log = opts.log;
  }

  probe(): Promise<AccelProbeResult> {
    if (this.#accel) return this.#accel;
    const p = probeAccelerator({ env: process.env }).then((r) => {
      this.#log.info(r, 'accelerator chosen');
      return r;
    });
    // A failed probe is not cached: the next call tries again.
    p.catch(() => (this.#accel = null));
    this.#accel = p;
    return p;
  }

  async accel(): Promise<'kvm' | 'tcg'> {
    return (await this.probe()).accel;
  }

  qemu(): Promise<QemuHostInfo> {
    if (this.#info) return this.#info;
    const p = readQemuHostInfo();
    p.catch(() => (this.#info = null));
    this.#info = p;
    return p;
  }

  async resolveMachineType(requested: string): Promise<string> {
    return resolveMachineType(requested, (await this.qemu()).machineTypes);
  }

  /**
   * Under BIOS, prefers the uncompressed kernel QEMU boots through its PVH entry:
   * decompressing the xz kernel costs about 4 s of every boot under TCG.
   */
  async testGuest(firmware: 'bios' | 'uefi' = 'bios'): Promise<{ kernel: string; initrd: string }> {
    const pvh = join(this.#guestDir, 'vmlinux-pvh');
    // OVMF loads kernels through their EFI stub, which only the bzImage has.
    const kernel = firmware === 'bios' && (await readable(pvh)) ? pvh : join(this.#guestDir, 'vmlinuz');
    const initrd = join(this.#guestDir, 'initrd.img');
    if (!(await readable(kernel)) || !(await readable(initrd))) {
      throw new MamoriError(
        'TEST_GUEST_MISSING',
        `the test guest is not built in ${this.#guestDir}; run 'make setup' (or set MAMORI_GUEST_DIR)`,
      );
    }
    return { kernel, initrd };
  }

  async ovmf(): Promise<{ code: string; vars: string }> {
    const o = (await this.qemu()).ovmf;
    if (!o)
      throw new MamoriError(
        'FIRMWARE_MISSING',
        'UEFI firmware (OVMF) is not installed; run make setup (Debian package ovmf)',
      );
    return o;
  }

  async info(): Promise<HostInfoView> {
    const [accel, q] = await Promise.all([this.probe(), this.qemu()]);
    const guestOk = await this.testGuest().then(
      () => true,
      () => false,
    );
    return {
      site: this.#siteName,
      accelerator: { accel: accel.accel, reason: accel.reason, probeMs: accel.probeMs },
      qemu: { version: q.qemuVersion, binary: q.qemuBinary },
      machineTypes: q.machineTypes.map((m) => ({
        name: m.name,
        isDefault: m.isDefault,
        ...(m.alias ? { alias: m.alias } : {}),
      })),
      ovmf: q.ovmf,
      testGuest: { available: guestOk, dir: this.#guestDir },
    };
  }
}
