import { createConnection, type Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { MamoriError } from '../core/mamori-error.js';

/**
 * A client of qemu-guest-agent over the VM's virtio-serial channel (a unix socket on the
 * host side). The channel has no session: bytes a previous client left unread, or a guest
 * agent that started late, can put stale replies in the stream. So every use begins with
 * guest-sync-delimited: the agent answers with 0xFF and then the id we sent, and
 * everything before that is discarded (qga/qapi-schema.json, "guest-sync-delimited").
 */
export class GuestAgent {
  #socket: Socket;
  #buffer = '';
  #waiters: (() => void)[] = [];
  #closed = false;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#wake();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(path: string, timeoutMs = 2_000): Promise<GuestAgent> {
    const socket = createConnection({ path });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(agentError(`the guest agent channel ${path} did not accept a connection within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(agentError(`cannot open the guest agent channel ${path}: ${e.message}`, e));
      });
    });
    return new GuestAgent(socket);
  }

  /** Drops whatever is in the stream and waits for the agent to echo a fresh id. */
  async sync(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    this.#buffer = '';
    this.#socket.write(`\xff${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`, 'latin1');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const mark = this.#buffer.lastIndexOf('\xff');
      if (mark >= 0) {
        const reply = await this.#line(mark + 1, deadline, 'guest-sync-delimited');
        if ((reply as { return?: unknown }).return === id) return;
      } else {
        await this.#wait(deadline, 'guest-sync-delimited');
      }
    }
  }

  /** Runs one command (after sync); a timeout leaves its outcome unknown, as with QMP. */
  async execute<T = unknown>(
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
  ): Promise<T> {
    this.#buffer = '';
    this.#socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    const reply = (await this.#line(0, Date.now() + timeoutMs, command)) as {
      return?: T;
      error?: { class: string; desc: string };
    };
    if (reply.error) {
      throw new MamoriError('QMP_ERROR', `guest agent: ${command} failed: ${reply.error.desc}`, {
        details: { command, errorClass: reply.error.class },
      });
    }
    return reply.return as T;
  }

  close(): void {
    this.#socket.destroy();
  }

  /** The first complete JSON line at or after `from` in the buffer; it and what precedes it are consumed. */
  async #line(from: number, deadline: number, what: string): Promise<unknown> {
    for (;;) {
      const end = this.#buffer.indexOf('\n', from);
      if (end >= 0) {
        const text = this.#buffer.slice(from, end).trim();
        this.#buffer = this.#buffer.slice(end + 1);
        from = 0;
        if (text === '') continue;
        try {
          return JSON.parse(text) as unknown;
        } catch {
          continue; // a fragment of something stale: the sync id decides
        }
      }
      await this.#wait(deadline, what);
    }
  }

  async #wait(deadline: number, what: string): Promise<void> {
    if (this.#closed) throw agentError(`the guest agent channel closed while waiting for ${what}`);
    const left = deadline - Date.now();
    if (left <= 0)
      throw new MamoriError(
        'QMP_TIMEOUT',
        `the guest agent did not answer ${what} in time; is qemu-guest-agent running in the guest?`,
        { details: { command: what } },
      );
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}

function agentError(message: string, cause?: unknown): MamoriError {
  return new MamoriError('QMP_DISCONNECTED', message, {
    details: { wanted: 'GUEST_AGENT_UNREACHABLE' },
    ...(cause ? { cause } : {}),
  });
}
