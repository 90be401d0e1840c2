import { createConnection, type Socket } from 'node:net';
import { MamoriError } from '../core/mamori-error.js';
import type {
  QmpArgs,
  QmpCommandName,
  QmpErrorClass,
  QmpEvent,
  QmpEvents,
  QmpGreeting,
  QmpReturn,
  QmpTimestamp,
} from './qmp-types.js';

export interface QmpConnectOptions {
  /** Bound on one attempt: socket connect + greeting + `qmp_capabilities`. */
  connectTimeoutMs: number;
  /** Keep retrying failed attempts (socket missing, refused, no greeting) for up to this many ms. */
  retryUntilMs?: number;
  /** Default per-command timeout (30 s if not set). */
  commandTimeoutMs?: number;
}

export interface QmpReconnectOptions {
  connectTimeoutMs?: number;
  /** Bound on the whole reconnect (default 5 s); attempts are spaced by RETRY_DELAY_MS. */
  retryUntilMs?: number;
}

export interface QmpExecuteOptions {
  timeoutMs?: number;
}

export interface QmpWaitOptions<D> {
  timeoutMs: number;
  predicate?: (ev: QmpEvent<D>) => boolean;
}

/** Passed to 'close' listeners; `expected` when close() or `quit` caused it. */
export interface QmpCloseInfo {
  expected: boolean;
  error?: Error;
}

type ExecuteRest<C extends QmpCommandName> =
  undefined extends QmpArgs<C>
    ? [args?: QmpArgs<C>, options?: QmpExecuteOptions]
    : [args: QmpArgs<C>, options?: QmpExecuteOptions];

type Listener = (arg: never) => void;

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const RETRY_DELAY_MS = 100;
const MAX_LINE_BYTES = 64 * 1024 * 1024;

/**
 * A QMP client over a unix socket, framed like libvirt's qemu_monitor_json.c: one JSON
 * message per line, an `id` on every command matched to its reply, events dispatched
 * by name as they arrive between replies. QEMU's monitor must be in its default
 * (not pretty-printed) mode.
 */
export class QmpClient {
  readonly #socketPath: string;
  readonly #commandTimeoutMs: number;
  #connectTimeoutMs: number;
  #socket: Socket | null = null;
  #buffer = '';
  #pending = new Map<string, Pending>();
  #listeners = new Map<string, Set<Listener>>();
  #nextId = 1;
  #greeting: QmpGreeting | null = null;
  #greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (err: Error) => void } | null = null;
  #handshaking = false;
  #expectClose = false;
  #closeError: Error | undefined;

  private constructor(socketPath: string, options: QmpConnectOptions) {
    this.#socketPath = socketPath;
    this.#connectTimeoutMs = options.connectTimeoutMs;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  }

  /** Connects, reads the greeting, negotiates capabilities; retries within `retryUntilMs`. */
  static async connect(socketPath: string, options: QmpConnectOptions): Promise<QmpClient> {
    const client = new QmpClient(socketPath, options);
    await client.#establish(options.connectTimeoutMs, options.retryUntilMs ?? 0);
    return client;
  }

  get socketPath(): string {
    return this.#socketPath;
  }

  /** The greeting of the current (or last) connection: QEMU's version and capabilities. */
  get greeting(): QmpGreeting | null {
    return this.#greeting;
  }

  get connected(): boolean {
    return this.#socket !== null && !this.#handshaking;
  }

  execute<C extends QmpCommandName>(command: C, ...rest: ExecuteRest<C>): Promise<QmpReturn<C>>;
  execute<S extends string>(
    command: S extends QmpCommandName ? never : S,
    args?: Record<string, unknown>,
    options?: QmpExecuteOptions,
  ): Promise<unknown>;
  execute(command: string, args?: unknown, options: QmpExecuteOptions = {}): Promise<unknown> {
    const socket = this.#socket;
    if (socket === null || socket.destroyed || (this.#handshaking && command !== 'qmp_capabilities')) {
      return Promise.reject(
        new MamoriError(
          'QMP_DISCONNECTED',
          `QMP ${command} was not sent: not connected to ${this.#socketPath}. Reconnect, or check that QEMU is running.`,
          { details: { command, socketPath: this.#socketPath, sent: false } },
        ),
      );
    }
    const id = `mamori-${this.#nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new MamoriError(
            'QMP_TIMEOUT',
            `QMP ${command} got no reply within ${timeoutMs} ms; its outcome is unknown (QEMU may still run it). ` +
              'Query the state before retrying.',
            { details: { command, timeoutMs, outcome: 'unknown', socketPath: this.#socketPath } },
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      if (command === 'quit') this.#expectClose = true;
      socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** Subscribes to an event name, '*' for every event, or 'close'. Returns the unsubscribe function. */
  on<E extends keyof QmpEvents>(name: E, listener: (ev: QmpEvent<QmpEvents[E]>) => void): () => void;
  on(name: 'close', listener: (info: QmpCloseInfo) => void): () => void;
  on(name: string, listener: (ev: QmpEvent) => void): () => void;
  on(name: string, listener: Listener): () => void {
    let set = this.#listeners.get(name);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(listener);
    return () => {
      this.#listeners.get(name)?.delete(listener);
    };
  }

  /**
   * Resolves with the next matching event. Call it before sending the command that
   * causes the event, or the event may pass before anyone listens.
   */
  waitForEvent<E extends keyof QmpEvents>(
    name: E,
    options: QmpWaitOptions<QmpEvents[E]>,
  ): Promise<QmpEvent<QmpEvents[E]>>;
  waitForEvent(name: string, options: QmpWaitOptions<Record<string, unknown>>): Promise<QmpEvent>;
  waitForEvent(name: string, options: QmpWaitOptions<never>): Promise<QmpEvent<never>> {
    if (!this.connected) {
      return Promise.reject(
        new MamoriError('QMP_DISCONNECTED', `cannot wait for QMP event ${name}: not connected to ${this.#socketPath}`, {
          details: { event: name },
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        offEvent();
        offClose();
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new MamoriError('QMP_TIMEOUT', `QMP event ${name} did not arrive within ${options.timeoutMs} ms`, {
            details: { event: name, timeoutMs: options.timeoutMs },
          }),
        );
      }, options.timeoutMs);
      const offEvent = this.on(name, (ev: QmpEvent) => {
        const typed = ev as QmpEvent<never>;
        if (options.predicate !== undefined && !options.predicate(typed)) return;
        done();
        resolve(typed);
      });
      const offClose = this.on('close', (info: QmpCloseInfo) => {
        done();
        reject(
          new MamoriError(
            'QMP_DISCONNECTED',
            `QMP connection to ${this.#socketPath} closed while waiting for event ${name}`,
            { details: { event: name, socketPath: this.#socketPath }, cause: info.error },
          ),
        );
      });
    });
  }

  /**
   * Connects again to the same socket after the QMP server went away (QEMU's monitor
   * accepts a new client once the old one is gone). Listeners stay subscribed.
   */
  async reconnect(options: QmpReconnectOptions = {}): Promise<void> {
    if (this.#socket !== null) await this.close();
    if (options.connectTimeoutMs !== undefined) this.#connectTimeoutMs = options.connectTimeoutMs;
    await this.#establish(this.#connectTimeoutMs, options.retryUntilMs ?? 5_000);
  }

  /** Closes the connection; commands still pending reject with QMP_DISCONNECTED. */
  async close(): Promise<void> {
    const socket = this.#socket;
    if (socket === null) return;
    this.#expectClose = true;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.destroy();
    });
  }

  async #establish(connectTimeoutMs: number, retryUntilMs: number): Promise<void> {
    const deadline = Date.now() + retryUntilMs;
    let attempts = 0;
    for (;;) {
      attempts += 1;
      try {
        await this.#attempt(connectTimeoutMs);
        return;
      } catch (err) {
        if (Date.now() + RETRY_DELAY_MS > deadline) throw this.#connectError(err, attempts);
        await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
      }
    }
  }

  async #attempt(timeoutMs: number): Promise<void> {
    const started = Date.now();
    const socket = await openUnixSocket(this.#socketPath, timeoutMs);
    this.#attach(socket);
    this.#handshaking = true;
    try {
      const greeting = await withTimeout(
        new Promise<QmpGreeting>((resolve, reject) => {
          this.#greetingWaiter = { resolve, reject };
        }),
        Math.max(1, timeoutMs - (Date.now() - started)),
        'greeting',
      );
      this.#greeting = greeting;
      await this.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, timeoutMs - (Date.now() - started)) });
      this.#handshaking = false;
    } catch (err) {
      this.#greetingWaiter = null;
      this.#handshaking = false;
      if (this.#socket === socket) this.#socket = null;
      socket.destroy();
      throw err;
    }
  }

  #connectError(err: unknown, attempts: number): MamoriError {
    const details = { socketPath: this.#socketPath, attempts };
    if (err instanceof MamoriError && err.code === 'QMP_TIMEOUT') {
      return new MamoriError(
        'QMP_TIMEOUT',
        `QMP socket ${this.#socketPath} did not complete the handshake (greeting, qmp_capabilities) in time; ` +
          'another client may hold the monitor, or QEMU is stuck.',
        { details, cause: err },
      );
    }
    const reason =
      (err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.message : String(err));
    return new MamoriError(
      'QMP_DISCONNECTED',
      `could not connect to QMP socket ${this.#socketPath} (${reason}) after ${attempts} attempt(s); check that QEMU is running.`,
      { details, cause: err },
    );
  }

  #attach(socket: Socket): void {
    this.#socket = socket;
    this.#buffer = '';
    this.#greeting = null;
    this.#expectClose = false;
    this.#closeError = undefined;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(socket, chunk));
    socket.on('error', (err) => {
      this.#closeError ??= err;
    });
    socket.on('close', () => this.#onClose(socket));
  }

  #onData(socket: Socket, chunk: string): void {
    if (socket !== this.#socket) return;
    this.#buffer += chunk;
    let start = 0;
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n', start)) {
      const line = this.#buffer.slice(start, nl).trim();
      start = nl + 1;
      if (line !== '') this.#onLine(socket, line);
      if (socket !== this.#socket || socket.destroyed) return;
    }
    this.#buffer = this.#buffer.slice(start);
    if (this.#buffer.length > MAX_LINE_BYTES)
      this.#protocolError(socket, 'a QMP message exceeded 64 MiB without a newline');
  }

  #onLine(socket: Socket, line: string): void {
    let msg: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
      msg = parsed as Record<string, unknown>;
    } catch (err) {
      this.#protocolError(socket, `QEMU sent a line that is not a JSON object: ${line.slice(0, 200)}`, err);
      return;
    }
    if ('QMP' in msg) {
      this.#greeting = msg as unknown as QmpGreeting;
      const waiter = this.#greetingWaiter;
      this.#greetingWaiter = null;
      waiter?.resolve(this.#greeting);
    } else if (typeof msg['event'] === 'string') {
      this.#dispatchEvent(msg);
    } else if ('return' in msg || 'error' in msg) {
      this.#onReply(msg);
    }
  }

  #onReply(msg: Record<string, unknown>): void {
    const id = msg['id'];
    let key: string | undefined;
    if (typeof id === 'string') key = id;
    // QEMU answers without an id only when it could not parse a command; replies are in order.
    else if (id === undefined) key = this.#pending.keys().next().value;
    if (key === undefined) return;
    const pending = this.#pending.get(key);
    if (pending === undefined) return; // the command already timed out; its late reply is dropped
    this.#pending.delete(key);
    clearTimeout(pending.timer);
    if ('error' in msg) {
      const error = (msg['error'] ?? {}) as { class?: string; desc?: string };
      const errorClass = (error.class ?? 'GenericError') as QmpErrorClass;
      const desc = error.desc ?? '';
      pending.reject(
        new MamoriError('QMP_ERROR', `QEMU refused ${pending.command}: ${desc}`, {
          details: { command: pending.command, errorClass, desc },
        }),
      );
    } else {
      pending.resolve(msg['return']);
    }
  }

  #dispatchEvent(msg: Record<string, unknown>): void {
    const data = msg['data'];
    const ev: QmpEvent = {
      event: msg['event'] as string,
      data: typeof data === 'object' && data !== null ? (data as Record<string, unknown>) : {},
      timestamp: (msg['timestamp'] as QmpTimestamp | undefined) ?? { seconds: 0, microseconds: 0 },
    };
    this.#emit(ev.event, ev);
    this.#emit('*', ev);
  }

  #emit(name: string, arg: unknown): void {
    const set = this.#listeners.get(name);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as (a: unknown) => void)(arg);
      } catch (err) {
        // A listener's bug must not corrupt the framing; surface it like an EventEmitter would.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  #protocolError(socket: Socket, message: string, cause?: unknown): void {
    this.#closeError ??= new MamoriError('QMP_ERROR', message, { details: { socketPath: this.#socketPath }, cause });
    socket.destroy();
  }

  #onClose(socket: Socket): void {
    if (socket !== this.#socket) return;
    this.#socket = null;
    const waiter = this.#greetingWaiter;
    this.#greetingWaiter = null;
    waiter?.reject(
      new MamoriError('QMP_DISCONNECTED', `${this.#socketPath} closed before QEMU sent its QMP greeting`, {
        details: { socketPath: this.#socketPath },
        cause: this.#closeError,
      }),
    );
    const expected = this.#expectClose;
    const error = this.#closeError;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      // `quit` is answered, then QEMU closes; if the close wins the race the outcome is still known.
      if (p.command === 'quit') {
        p.resolve({});
        continue;
      }
      p.reject(
        new MamoriError(
          'QMP_DISCONNECTED',
          `QMP connection to ${this.#socketPath} closed before ${p.command} got a reply; its outcome is unknown.`,
          { details: { command: p.command, socketPath: this.#socketPath, outcome: 'unknown' }, cause: error },
        ),
      );
    }
    if (this.#handshaking) return; // a failed attempt inside connect/reconnect is not a close of the client
    const info: QmpCloseInfo = error === undefined ? { expected } : { expected, error };
    this.#emit('close', info);
  }
}

function openUnixSocket(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new MamoriError('QMP_TIMEOUT', `connecting to ${path} took longer than ${timeoutMs} ms`, {
          details: { socketPath: path },
        }),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new MamoriError('QMP_TIMEOUT', `no QMP ${what} within ${timeoutMs} ms`, { details: { timeoutMs } }));
    }, timeoutMs);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err as Error);
      },
    );
  });
}
