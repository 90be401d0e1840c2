import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedAlert {
  status: 'firing' | 'resolved';
  site: string;
  incident: {
    id: string;
    kind: string;
    severity: string;
    target: string;
    message: string;
    details: unknown;
    openedAt: string;
    clearedAt: string | null;
    remedy: string | null;
  };
}

/**
 * An alert webhook receiver for tests: a node:http server on the loopback that records
 * every JSON body posted to it. `answer` decides the status of each POST (503 to make the
 * site retry, 400 to refuse for good).
 */
export class WebhookReceiver {
  readonly received: ReceivedAlert[] = [];
  answer: (body: ReceivedAlert) => number = () => 204;
  #server: Server;
  url = '';

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(host = '127.0.0.1'): Promise<WebhookReceiver> {
    const server = createServer();
    const r = new WebhookReceiver(server);
    server.on('request', (req, res) => {
      let text = '';
      req
        .setEncoding('utf8')
        .on('data', (c: string) => (text += c))
        .on('end', () => {
          let body: ReceivedAlert;
          try {
            body = JSON.parse(text) as ReceivedAlert;
          } catch {
            res.writeHead(400).end();
            return;
          }
          const status = r.answer(body);
          if (status >= 200 && status < 300) r.received.push(body);
          res.writeHead(status).end();
        });
    });
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    r.url = `http://${host}:${(server.address() as AddressInfo).port}/alerts`;
    return r;
  }

  /** What was accepted for this incident kind (and target), in arrival order. */
  of(kind: string, target?: string): ReceivedAlert[] {
    return this.received.filter(
      (a) => a.incident.kind === kind && (target === undefined || a.incident.target === target),
    );
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** Polls until fn returns a truthy value; the deadline only guards against a hang, it is no timing check. */
export async function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
