import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import fastifyStatic from '@fastify/static';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { CHECKOUT_ROOT } from '../../core/checkout-root.js';

/** Where `make build` puts the web console (web/dist of the checkout). */
export const CONSOLE_DIR = join(CHECKOUT_ROOT, 'web', 'dist');

const MISSING = `The mamori web console is not built in this checkout (no ${CONSOLE_DIR}/index.html).
Run 'make build' in the checkout, then reload this page. The REST API works without it.
`;

/**
 * The web console (web/, a React app built by Vite) at /ui/, from the same origin as the API.
 * Its routes are public (route-roles.ts): the page and its scripts hold no data, and every
 * API call the page makes carries the operator's token like any other client's.
 * Paths that are not files of the build are the app's own pages: they get its index.html.
 */
export function consoleRoutes(opts: { dir?: string } = {}): FastifyPluginAsync {
  const dir = opts.dir ?? CONSOLE_DIR;
  return async (app) => {
    // serve: false: the routes below pick the file, so unknown pages fall back to index.html.
    await app.register(fastifyStatic, { root: dir, serve: false });
    const hide = { schema: { hide: true } };
    const page = async (reply: FastifyReply, file: string): Promise<FastifyReply> => {
      if (!(await isFile(join(dir, 'index.html'))))
        return reply.status(503).type('text/plain; charset=utf-8').send(MISSING);
      // The hashed assets never change; index.html names the current ones, so it is never cached.
      if (file === 'index.html') return reply.header('cache-control', 'no-cache').sendFile(file);
      return reply.header('cache-control', 'public, max-age=31536000, immutable').sendFile(file);
    };
    app.get('/', hide, async (_req, reply) => reply.redirect(302, '/ui/'));
    // Browsers ask for it without a token: an empty answer, not a 401 in the audit log per visit.
    app.get('/favicon.ico', hide, async (_req, reply) => reply.status(204).send());
    app.get('/ui', hide, async (_req, reply) => reply.redirect(302, '/ui/'));
    app.get<{ Params: { '*': string } }>('/ui/*', hide, async (req, reply) => {
      const wanted = normalize(req.params['*'] || 'index.html');
      // A page of the app has no extension; a file that is not in the build is a 404, not the app.
      if (wanted === 'index.html' || extname(wanted) === '') return page(reply, 'index.html');
      const inside = !wanted.startsWith('..') && !wanted.startsWith(sep);
      if (!inside || !(await isFile(join(dir, wanted)))) return reply.callNotFound();
      return page(reply, wanted);
    });
  };
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null))?.isFile() ?? false;
}
