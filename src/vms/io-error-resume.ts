import type { Logger } from '../core/logger.js';
import type { QmpEvents } from '../qemu/qmp-types.js';

export type BlockIoError = QmpEvents['BLOCK_IO_ERROR'];

export interface IoErrorResumeDeps {
  /** QEMU's run state now (query-status `status`): only 'io-error' is resumed. */
  runState: () => Promise<string>;
  /** `cont`: QEMU retries the requests that failed before it paused. */
  resume: () => Promise<void>;
  /** The errors kept coming after every retry: the VM stays paused, for the operator. */
  giveUp: (last: BlockIoError) => Promise<void>;
  log: Logger;
  /** Waits before each retry; one retry per entry (default 0.25, 1, 2, 4 and 8 s). */
  delaysMs?: readonly number[];
  /** Errors this long after the last one start a fresh set of retries (default 60 s). */
  quietMs?: number;
}

const DELAYS_MS = [250, 1_000, 2_000, 4_000, 8_000];
const QUIET_MS = 60_000;

/**
 * A VM that QEMU paused on a host I/O error (werror/rerror=stop: vm-argv.ts) is resumed after a
 * short wait, and QEMU retries the request that failed. So a passing error (a block-graph change
 * under a replication cycle, a storage path that came back, space freed) never reaches the guest
 * as EIO, which a guest filesystem answers by going read-only and the test guest's write log by
 * stopping. An error that outlasts the retries leaves the VM paused with the reason in its state,
 * as vSphere holds a VM whose datastore is gone rather than fail its writes.
 *
 * One per QEMU process. Several errors of one pause (each request in flight fails) use one retry.
 */
export class IoErrorResume {
  #deps: IoErrorResumeDeps;
  #delays: readonly number[];
  #quietMs: number;
  #attempt = 0;
  #lastErrorAt = -Infinity;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(deps: IoErrorResumeDeps) {
    this.#deps = deps;
    this.#delays = deps.delaysMs ?? DELAYS_MS;
    this.#quietMs = deps.quietMs ?? QUIET_MS;
  }

  /** A BLOCK_IO_ERROR event of this QEMU. */
  onError(e: BlockIoError): void {
    if (this.#stopped || e.action !== 'stop') return;
    const now = Date.now();
    if (now - this.#lastErrorAt > this.#quietMs) this.#attempt = 0;
    this.#lastErrorAt = now;
    if (this.#timer !== undefined) return;
    if (this.#attempt >= this.#delays.length) {
      this.#deps.log.error(
        { event: e, retries: this.#attempt },
        'VM paused on a host I/O error that outlasted the retries; resume it once its storage is fixed',
      );
      void this.#deps.giveUp(e).catch(() => undefined);
      return;
    }
    const delay = this.#delays[this.#attempt++]!;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#retry();
    }, delay);
  }

  /** The QEMU is gone or detached: no retry after this. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #retry(): Promise<void> {
    if (this.#stopped) return;
    try {
      // Never resume a VM someone paused or stopped meanwhile: only QEMU's own I/O-error pause.
      if ((await this.#deps.runState()) !== 'io-error') return;
      this.#deps.log.info(
        { attempt: this.#attempt },
        'resuming a VM paused on a host I/O error (QEMU retries the request)',
      );
      await this.#deps.resume();
    } catch (e) {
      this.#deps.log.warn({ err: e }, 'could not resume a VM paused on a host I/O error');
    }
  }
}
