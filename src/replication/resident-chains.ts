import { stat } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import type { DaemonLayer } from '../qemu/daemon-chain.js';
import type { QmpClient } from '../qemu/qmp-client.js';

/** One layer of a chain kept open in the daemon: its format node `node` on the protocol node `node-f`. */
interface ResidentLayer extends DaemonLayer {
  node: string;
  /** The file's identity when it was opened: a path that now names another file is not this layer. */
  dev: number;
  ino: number;
}

interface ResidentChain {
  layers: ResidentLayer[];
  usedAt: number;
}

const QMP_MS = 10_000;

/**
 * The point chains of the replicas, kept open in the staging daemon from one cycle to the next.
 * Opening a replica's chain cost about 3 ms per layer (a qcow2 open in QEMU plus its QMP round
 * trips): with the 24 points retention keeps, 70 of a small cycle's 100 ms. Kept open, a cycle
 * adds only the point the previous cycle made, and retention merges the oldest point inside the
 * daemon (merge()) instead of in a qemu-img process, which could not open the base for writing
 * while the daemon holds it.
 *
 * Format nodes are read-only; their files are `auto-read-only`, so each is held O_RDONLY with a
 * reader's lock until a merge reopens the base and the layer above the merged point writable.
 * What a cycle asks for is matched against what is open, bottom up, by path and by the file's
 * identity (device, inode); the first layer that differs and everything above it is closed and
 * opened again. So a withdrawn point, a merge done elsewhere or an absorbed seed costs a reopen,
 * never a stale read. Writers other than the daemon (absorbing a seed, deleting a replica) must
 * have the chain released first: the daemon's reader locks refuse them.
 *
 * Owned by one daemon process: a new daemon starts with none open. The caller serialises the
 * operations on one chain (the replica's lock); different chains may interleave.
 */
export class ResidentChains {
  readonly #qmp: QmpClient;
  readonly #prefix: string;
  readonly #chains = new Map<string, ResidentChain>();
  #seq = 0;

  constructor(qmp: QmpClient, prefix = 'r') {
    this.#qmp = qmp;
    this.#prefix = prefix;
  }

  /** Keys of the chains open now. */
  keys(): string[] {
    return [...this.#chains.keys()];
  }

  /** Node names of a chain open now, bottom first (tests, diagnostics). */
  nodesOf(key: string): string[] {
    return (this.#chains.get(key)?.layers ?? []).map((l) => l.node);
  }

  /**
   * The chain `layers` (bottom first), open read-only: what is already open and still the same
   * files is kept, the rest opened. Returns the top node, for an overlay's backing.
   */
  async top(key: string, layers: DaemonLayer[]): Promise<string> {
    if (layers.length === 0)
      throw new MamoriError('INVALID_INPUT', `chain ${key} has no layers`, { details: { chain: key } });
    const chain = this.#chains.get(key) ?? { layers: [], usedAt: 0 };
    this.#chains.set(key, chain);
    chain.usedAt = Date.now();
    let keep = 0;
    while (keep < chain.layers.length && keep < layers.length && (await sameLayer(chain.layers[keep]!, layers[keep]!)))
      keep++;
    await this.#closeDownTo(chain, keep);
    for (let k = keep; k < layers.length; k++) await this.#add(chain, layers[k]!);
    if (chain.layers.length === 0) this.#chains.delete(key);
    return chain.layers.at(-1)!.node;
  }

  /** Closes a chain (everything of it, top down). Throws if the daemon refuses: the caller must then stop it. */
  async release(key: string): Promise<void> {
    const chain = this.#chains.get(key);
    if (chain === undefined) return;
    await this.#closeDownTo(chain, 0);
    this.#chains.delete(key);
  }

  /** Chains no cycle has used since `before` (ms since the epoch): a replica deleted or no longer replicating. */
  idleSince(before: number): string[] {
    return [...this.#chains.entries()].filter(([, c]) => c.usedAt < before).map(([k]) => k);
  }

  /**
   * Whether `layers` (bottom first) are the lower part of the chain open as `key`, the same files
   * as when they were opened.
   */
  async holds(key: string, layers: DaemonLayer[]): Promise<boolean> {
    const chain = this.#chains.get(key);
    if (chain === undefined || chain.layers.length < layers.length) return false;
    for (const [k, l] of layers.entries()) if (!(await sameLayer(chain.layers[k]!, l))) return false;
    return true;
  }

  /**
   * Merges layer `k` (a point) into layer `k - 1` (the base) inside the daemon, then writes the
   * base's name (`baseName`, relative, as qemu-img rebase -u would) into the header of layer
   * `k + 1`, which must be open. The point's nodes are closed.
   *
   * QEMU 7.2's commit of a point below the top walks the whole virtual size in 512 KiB steps,
   * yielding the daemon's one main loop at each: 7.6 ms per GiB here (122 ms for 16 GiB),
   * however little the point holds. An active commit (a mirror) finds what the point allocates
   * in a few steps, but only of a node with no parent: so the layer above is detached from the
   * point for the merge (no cycle reads this chain during retention: its replica's lock is
   * held) and attached to the base after it. About 25 ms whatever the disk's size.
   * The base is writable only for the merge. As with qemu-img commit, the point and every
   * layer above it read the same bytes before, during and after (the point is not changed), so
   * a merge cut anywhere is simply done again.
   * On an error the chain is released (its state in the daemon is not known); if that fails too
   * the error says so and the caller must stop the daemon.
   */
  async merge(key: string, k: number, baseName: string, jobId: string, timeoutMs: number): Promise<void> {
    const chain = this.#chains.get(key);
    const base = chain?.layers[k - 1];
    const point = chain?.layers[k];
    const above = chain?.layers[k + 1];
    if (chain === undefined || base === undefined || point === undefined || above === undefined)
      throw new MamoriError('VM_INVALID_STATE', `chain ${key} has no open layers ${k - 1}..${k + 1} to merge`, {
        details: { chain: key, layer: k },
      });
    chain.usedAt = Date.now();
    const baseBacking = chain.layers[k - 2]?.node ?? null;
    try {
      await this.#reopen([
        [base, false, baseBacking],
        [above, true, null],
      ]);
      await this.#activeCommit(jobId, point.node, base.node, timeoutMs);
      chain.layers.splice(k, 1);
      await this.#del(point);
      await this.#reopen([
        [base, true, baseBacking],
        [above, true, base.node],
      ]);
      await this.#qmp.execute(
        'change-backing-file',
        { device: chain.layers.at(-1)!.node, 'image-node-name': above.node, 'backing-file': baseName },
        { timeoutMs: QMP_MS },
      );
    } catch (e) {
      try {
        await this.release(key);
      } catch (e2) {
        throw new MamoriError('QMP_ERROR', `merging ${point.file} failed, and the daemon could not close its chain`, {
          details: { chain: key, point: point.file, mergeError: String(e) },
          cause: e2,
        });
      }
      throw e;
    }
  }

  async #add(chain: ResidentChain, layer: DaemonLayer): Promise<void> {
    const st = await stat(layer.file);
    const node = `${this.#prefix}${++this.#seq}`;
    const below = chain.layers.at(-1);
    if (layer.format === 'raw' && below !== undefined)
      throw new MamoriError('INVALID_INPUT', `${layer.file}: a raw image can only be the bottom layer`, {
        details: { file: layer.file },
      });
    await this.#qmp.execute(
      'blockdev-add',
      {
        driver: layer.file.startsWith('/dev/') ? 'host_device' : 'file',
        filename: layer.file,
        'node-name': `${node}-f`,
        'read-only': false,
        'auto-read-only': true,
      },
      { timeoutMs: QMP_MS },
    );
    try {
      await this.#qmp.execute('blockdev-add', formatOptions({ ...layer, node }, true, below?.node ?? null), {
        timeoutMs: QMP_MS,
      });
    } catch (e) {
      await this.#qmp
        .execute('blockdev-del', { 'node-name': `${node}-f` }, { timeoutMs: QMP_MS })
        .catch(() => undefined);
      throw e;
    }
    chain.layers.push({ ...layer, node, dev: st.dev, ino: st.ino });
  }

  async #closeDownTo(chain: ResidentChain, keep: number): Promise<void> {
    while (chain.layers.length > keep) {
      await this.#del(chain.layers.at(-1)!);
      chain.layers.pop();
    }
  }

  async #del(l: ResidentLayer): Promise<void> {
    await this.#qmp.execute('blockdev-del', { 'node-name': l.node }, { timeoutMs: QMP_MS });
    await this.#qmp.execute('blockdev-del', { 'node-name': `${l.node}-f` }, { timeoutMs: QMP_MS });
  }

  /**
   * One blockdev-reopen of several nodes (QEMU applies them together or not at all). It takes
   * each node's whole description: as at blockdev-add, but for read-only and backing.
   */
  async #reopen(nodes: [ResidentLayer, boolean, string | null][]): Promise<void> {
    const options = nodes.map(([l, readOnly, backing]) => formatOptions(l, readOnly, backing));
    await this.#qmp.execute('blockdev-reopen', { options }, { timeoutMs: QMP_MS });
  }

  /**
   * block-commit of `top` (a node with no parent) into `base`: a job that turns ready once the
   * base holds everything, is completed then, and concludes; its error read, and dismissed.
   */
  async #activeCommit(id: string, top: string, base: string, timeoutMs: number): Promise<void> {
    const status = (want: string): Promise<unknown> =>
      this.#qmp.waitForEvent('JOB_STATUS_CHANGE', {
        timeoutMs,
        predicate: (ev) => ev.data.id === id && ev.data.status === want,
      });
    const ready = status('ready');
    const concluded = status('concluded');
    ready.catch(() => undefined);
    concluded.catch(() => undefined);
    await this.#qmp.execute(
      'block-commit',
      { 'job-id': id, device: top, 'base-node': base, 'auto-dismiss': false },
      { timeoutMs: QMP_MS },
    );
    // A job that fails before it is ready concludes without being ready.
    if ((await Promise.race([ready.then(() => 'ready'), concluded.then(() => 'concluded')])) === 'ready')
      await this.#qmp.execute('job-complete', { id }, { timeoutMs: QMP_MS });
    await concluded;
    const jobs = await this.#qmp.execute('query-jobs', undefined, { timeoutMs: QMP_MS });
    const error = jobs.find((j) => j.id === id)?.error;
    await this.#qmp.execute('job-dismiss', { id }, { timeoutMs: QMP_MS });
    if (error !== undefined)
      throw new MamoriError('QMP_ERROR', `QEMU could not merge the point (${id}): ${error}`, {
        details: { job: id },
      });
  }
}

function formatOptions(l: DaemonLayer & { node: string }, readOnly: boolean, backing: string | null): never {
  return {
    driver: l.format,
    'node-name': l.node,
    file: `${l.node}-f`,
    'read-only': readOnly,
    ...(l.format === 'qcow2' ? { backing } : {}),
  } as never;
}

async function sameLayer(open: ResidentLayer, wanted: DaemonLayer): Promise<boolean> {
  if (open.file !== wanted.file || open.format !== wanted.format) return false;
  const st = await stat(wanted.file).catch(() => null);
  return st !== null && st.dev === open.dev && st.ino === open.ino;
}
