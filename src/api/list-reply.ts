import { promisify } from 'node:util';
import { brotliCompress, constants, gzip } from 'node:zlib';
import type { FastifyReply, FastifyRequest } from 'fastify';

const brotli = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

/** Below this a list goes out as it is: compressing a few KB costs more than sending them. */
const COMPRESS_FROM_BYTES = 16 * 1024;

/**
 * Sends a big list (GET /vms, GET /replication) as JSON, compressed when the client accepts it.
 *
 * Why not Fastify's own reply: with 1,000 VMs the list is 700 KB. Its schema serializer builds
 * that text from thousands of pieces that Node then has to join before writing; JSON.stringify
 * makes it in one, and the objects here are built with exactly the schema's fields, so the text
 * is the same. Written raw, 700 KB through TLS cost the server about 8 ms a request; brotli at
 * quality 1 (about ten times smaller; gzip level 1 for a client without brotli) costs less, and
 * runs on libuv's thread pool, not the event loop (bench/store).
 *
 * Only these lists take this path: their answers carry no secret and nothing a caller sent, so
 * compression over TLS leaks nothing (BREACH needs both in one answer).
 */
export async function sendJsonList(
  req: FastifyRequest,
  reply: FastifyReply,
  list: readonly unknown[],
): Promise<FastifyReply> {
  const text = JSON.stringify(list);
  void reply.header('content-type', 'application/json; charset=utf-8').header('vary', 'accept-encoding');
  const encoding = text.length >= COMPRESS_FROM_BYTES ? acceptedEncoding(req.headers['accept-encoding']) : null;
  if (encoding === null) return reply.send(text);
  const body =
    encoding === 'br'
      ? await brotli(text, {
          params: {
            [constants.BROTLI_PARAM_QUALITY]: 1,
            [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
            [constants.BROTLI_PARAM_SIZE_HINT]: text.length,
          },
        })
      : await gzipAsync(text, { level: 1 });
  return reply.header('content-encoding', encoding).send(body);
}

/** br if the client lists it, else gzip, else none; an encoding the client refuses with q=0 is not used. */
export function acceptedEncoding(header: string | string[] | undefined): 'br' | 'gzip' | null {
  const accepted = new Set<string>();
  for (const part of (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (name && !(q !== undefined && Number(q.slice(2)) === 0)) accepted.add(name);
  }
  if (accepted.has('br')) return 'br';
  if (accepted.has('gzip')) return 'gzip';
  return null;
}
