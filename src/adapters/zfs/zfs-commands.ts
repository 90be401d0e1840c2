import { setTimeout as sleep } from 'node:timers/promises';
import { runProcess } from '../../core/run-process.js';
import { isMamoriError } from '../../core/mamori-error.js';
import { ZfsAdapterError, isZfsAdapterError } from './zfs-adapter-error.js';

export type Tool = 'zfs' | 'zpool';

/** One property of one dataset as `zfs get -Hp` prints it. */
export interface PropValue {
  value: string;
  source: string;
}

/** A snapshot of one dataset: `name` is the part after '@'. */
export interface Snapshot {
  name: string;
  guid: string;
  createtxg: number;
  /** Seconds since the epoch. */
  creation: number;
}

// A plain zfs command that takes longer than this is stuck; streams have no limit here
// (mamori's own time limit on the adapter bounds them).
const COMMAND_TIMEOUT_MS = 10 * 60_000;
// zfs-fuse answers "busy" for a moment after a file on the dataset was closed (FUSE
// releases asynchronously), so busy is retried for this long before it is an error.
const BUSY_RETRY_MS = 15_000;

/**
 * zfs and zpool on one host: this one (prefix []) or the peer site's, through the
 * connection's peerCommand. Runs them with argument arrays, never a shell string, in the
 * C locale (error texts are matched below), and turns their failures into the adapter's
 * declared codes.
 */
export class ZfsHost {
  readonly side: 'local' | 'peer';
  readonly #prefix: readonly string[];

  constructor(side: 'local' | 'peer', prefix: readonly string[]) {
    this.side = side;
    this.#prefix = prefix;
  }

  /** The program and its arguments for `tool args` on this host. */
  argv(tool: Tool, args: readonly string[]): [string, string[]] {
    const all = [...this.#prefix, tool, ...args];
    return [all[0]!, all.slice(1)];
  }

  async run(tool: Tool, args: readonly string[]): Promise<string> {
    const [file, rest] = this.argv(tool, args);
    try {
      return (await runProcess(file, rest, { timeoutMs: COMMAND_TIMEOUT_MS, env: { ...process.env, LC_ALL: 'C' } }))
        .stdout;
    } catch (e) {
      throw this.commandError(e, tool, args);
    }
  }

  /** Like run, but waits out "busy" (an unmount, rollback or destroy racing a last close). */
  async runWaitingIfBusy(tool: Tool, args: readonly string[]): Promise<string> {
    const deadline = Date.now() + BUSY_RETRY_MS;
    for (;;) {
      try {
        return await this.run(tool, args);
      } catch (e) {
        if (!isZfsAdapterError(e, 'DATASET_BUSY') || Date.now() > deadline) throw e;
        await sleep(250);
      }
    }
  }

  /** Maps a failed run to a declared code; `stderr` stays in details for the operator. */
  commandError(e: unknown, tool: Tool, args: readonly string[]): ZfsAdapterError {
    const command = `${tool} ${args.join(' ')}`;
    if (!isMamoriError(e))
      return new ZfsAdapterError('ZFS_COMMAND_FAILED', `${command} failed: ${String(e)}`, { command, host: this.side });
    const stderr = typeof e.details?.['stderr'] === 'string' ? (e.details['stderr'] as string) : '';
    const exitCode = e.details?.['exitCode'];
    const text = stderr.trim().split('\n').filter(Boolean).slice(-3).join(' ') || e.message;
    const details = { command, host: this.side, stderr: stderr.slice(-4000) };
    const unreachable = this.side === 'peer' ? 'PEER_UNREACHABLE' : 'CONNECTION_FAILED';
    // Could not start the program at all: zfs is not installed, or peerCommand's program is missing.
    if (e.code === 'PROCESS_FAILED' && exitCode === undefined)
      return new ZfsAdapterError(unreachable, `cannot run ${command} on the ${this.side} host: ${e.message}`, details);
    if (/failed to initialize ZFS library|zfs-fuse daemon is running|\/dev\/zfs/i.test(stderr)) {
      return new ZfsAdapterError(unreachable, `ZFS is not available on the ${this.side} host (${text})`, details);
    }
    // ssh's own failures (host down, key refused) exit 255; zfs never does.
    if (this.side === 'peer' && this.#prefix.length > 0 && exitCode === 255) {
      return new ZfsAdapterError('PEER_UNREACHABLE', `peerCommand could not reach the peer host: ${text}`, details);
    }
    if (/\bbusy\b/i.test(stderr)) return new ZfsAdapterError('DATASET_BUSY', `${command}: ${text}`, details);
    if (e.code === 'PROCESS_TIMEOUT')
      return new ZfsAdapterError(
        'ZFS_COMMAND_FAILED',
        `${command} did not finish within ${COMMAND_TIMEOUT_MS / 1000} s`,
        details,
      );
    return new ZfsAdapterError('ZFS_COMMAND_FAILED', `${command} failed: ${text}`, {
      ...details,
      missing: isMissingText(stderr),
    });
  }

  async poolExists(pool: string): Promise<boolean> {
    try {
      await this.run('zpool', ['list', '-H', '-o', 'name', pool]);
      return true;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /** `zfs get -Hp` of some properties of some datasets: dataset → property → value. */
  async getProps(datasets: readonly string[], props: readonly string[]): Promise<Map<string, Map<string, PropValue>>> {
    const out = new Map<string, Map<string, PropValue>>();
    if (datasets.length === 0) return out;
    const text = await this.run('zfs', [
      'get',
      '-Hp',
      '-o',
      'name,property,value,source',
      props.join(','),
      ...datasets,
    ]);
    parseGet(text, out);
    return out;
  }

  /** The properties of one dataset, or null when it does not exist. */
  async getPropsIfExists(dataset: string, props: readonly string[]): Promise<Map<string, PropValue> | null> {
    try {
      return (await this.getProps([dataset], props)).get(dataset) ?? null;
    } catch (e) {
      if (isMissing(e)) return null;
      throw e;
    }
  }

  /** The filesystems directly under a pool's root dataset. */
  async childFilesystems(pool: string): Promise<string[]> {
    const text = await this.run('zfs', ['list', '-H', '-o', 'name', '-t', 'filesystem', '-d', '1', pool]);
    return text
      .split('\n')
      .map((l) => l.trim())
      .filter((n) => n.startsWith(`${pool}/`) && !n.slice(pool.length + 1).includes('/'));
  }

  /** A dataset's snapshots, oldest first (by creation txg, which never goes backwards in a pool). */
  async snapshots(dataset: string): Promise<Snapshot[]> {
    const text = await this.run('zfs', [
      'get',
      '-Hp',
      '-r',
      '-d',
      '1',
      '-o',
      'name,property,value,source',
      'guid,createtxg,creation',
      dataset,
    ]);
    const props = new Map<string, Map<string, PropValue>>();
    parseGet(text, props);
    const snaps: Snapshot[] = [];
    for (const [name, p] of props) {
      if (!name.startsWith(`${dataset}@`)) continue;
      snaps.push({
        name: name.slice(dataset.length + 1),
        guid: p.get('guid')?.value ?? '',
        createtxg: Number(p.get('createtxg')?.value ?? 0),
        creation: Number(p.get('creation')?.value ?? 0),
      });
    }
    return snaps.sort((a, b) => a.createtxg - b.createtxg);
  }

  async set(dataset: string, property: string, value: string): Promise<void> {
    // This zfs (zfs-fuse 0.7) takes one property per `zfs set`.
    await this.run('zfs', ['set', `${property}=${value}`, dataset]);
  }

  async unmountIfMounted(dataset: string): Promise<void> {
    const p = await this.getProps([dataset], ['mounted']);
    if (p.get(dataset)?.get('mounted')?.value === 'yes') await this.runWaitingIfBusy('zfs', ['unmount', dataset]);
  }

  async mountIfUnmounted(dataset: string): Promise<void> {
    const p = await this.getProps([dataset], ['mounted']);
    if (p.get(dataset)?.get('mounted')?.value !== 'yes') await this.runWaitingIfBusy('zfs', ['mount', dataset]);
  }
}

function parseGet(text: string, out: Map<string, Map<string, PropValue>>): void {
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [name, property, value, source] = line.split('\t');
    if (name === undefined || property === undefined || value === undefined) continue;
    let m = out.get(name);
    if (!m) out.set(name, (m = new Map()));
    m.set(property, { value, source: source ?? '-' });
  }
}

/** A user property's value, or undefined when it is not set ("-" from source "-"). */
export function userProp(props: Map<string, PropValue> | undefined, name: string): string | undefined {
  const p = props?.get(name);
  if (!p || (p.value === '-' && p.source === '-') || p.value === '') return undefined;
  return p.value;
}

export function numProp(props: Map<string, PropValue> | undefined, name: string): number {
  const n = Number(props?.get(name)?.value);
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

function isMissingText(stderr: string): boolean {
  return /dataset does not exist|no such pool|could not find any snapshots/i.test(stderr);
}

/** True when a zfs error says the dataset, snapshot or pool does not exist. */
export function isMissing(e: unknown): boolean {
  return isZfsAdapterError(e, 'ZFS_COMMAND_FAILED') && e.details?.['missing'] === true;
}
