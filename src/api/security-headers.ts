import type { FastifyInstance } from 'fastify';

/**
 * Headers every answer carries, the console's pages above all: no framing (clickjacking),
 * no MIME sniffing, no referrer leaking a URL with a run id, and a CSP that lets a page run
 * only the console's own bundled scripts. style-src allows inline styles: the HTML run report
 * carries one <style> block, and styles run no code.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

export function installSecurityHeaders(app: FastifyInstance): void {
  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) if (!reply.hasHeader(name)) reply.header(name, value);
    return payload;
  });
}
