import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { MamoriError } from '../core/mamori-error.js';
import { maskUrl } from '../core/mask-url.js';

const MAX_URL_LENGTH = 2048;

/** Why one POST failed; permanent failures (a 4xx other than 408/429) are not retried. */
export class WebhookPostError extends Error {
  readonly permanent: boolean;
  constructor(message: string, permanent: boolean) {
    super(message);
    this.name = 'WebhookPostError';
    this.permanent = permanent;
  }
}

/** An absolute http(s) URL with a host; ALERT_WEBHOOK_INVALID otherwise, saying what is wrong. */
export function parseWebhookUrl(text: unknown): URL {
  // Even a URL that is refused may carry a password: the message shows it masked.
  // (A cut text could stop inside a password, so an over-long one is not shown at all.)
  const shown =
    typeof text !== 'string' ? text : text.length > MAX_URL_LENGTH ? `(${text.length} characters)` : maskUrl(text);
  const invalid = (why: string): MamoriError =>
    new MamoriError(
      'ALERT_WEBHOOK_INVALID',
      `the alert webhook URL ${JSON.stringify(shown)} ${why}; give one like https://alerts.example.com/mamori`,
      { details: { url: shown } },
    );
  if (typeof text !== 'string' || text.trim() === '') throw invalid('is empty');
  if (text.length > MAX_URL_LENGTH) throw invalid(`is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw invalid('is not an absolute URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw invalid(`uses ${url.protocol.replace(/:$/, '')}; only http and https are supported`);
  if (!url.hostname) throw invalid('has no host');
  return url;
}

/**
 * POSTs one JSON body and resolves on a 2xx answer. node:http(s) rather than fetch: one
 * deadline for the whole exchange, no redirects followed (a receiver that moved is a
 * configuration to fix, not something to chase), a fresh connection each time.
 * https is checked against the system's CAs.
 */
export function postWebhook(url: URL, body: unknown, timeoutMs: number): Promise<void> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
      url,
      {
        method: 'POST',
        agent: false,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          'user-agent': 'mamori-alerts',
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve();
          const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
          reject(new WebhookPostError(`the webhook answered HTTP ${status}`, permanent));
        });
        res.on('error', (e) => reject(new WebhookPostError(`the answer broke off: ${e.message}`, false)));
      },
    );
    const timer = setTimeout(
      () => req.destroy(new WebhookPostError(`no answer within ${timeoutMs} ms`, false)),
      timeoutMs,
    );
    req.on('close', () => clearTimeout(timer));
    req.on('error', (e) =>
      reject(
        e instanceof WebhookPostError
          ? e
          : new WebhookPostError(`${(e as NodeJS.ErrnoException).code ?? 'error'}: ${e.message}`, false),
      ),
    );
    req.end(payload);
  });
}
