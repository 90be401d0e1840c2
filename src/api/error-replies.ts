import type { FastifyError, FastifyInstance } from 'fastify';
import { MamoriError } from '../core/mamori-error.js';

/**
 * Every error leaves the API in one shape, `{ error: { code, message, retryable, requestId } }`:
 * a MamoriError with its own code and status, a schema refusal as INVALID_INPUT (400), a body that
 * is not JSON or too large with their own codes, anything unexpected as INTERNAL with the request id
 * (logged whole, shown generic). Unknown routes answer NOT_FOUND in the same shape.
 */
export function installErrorReplies(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | MamoriError | Error, req, reply) => {
    if (err instanceof MamoriError) {
      if (err.httpStatus >= 500) req.log.error({ err, reqId: req.id }, 'request failed');
      return reply.status(err.httpStatus).send({ error: { ...err.toJSON(), requestId: req.id } });
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      return reply.status(400).send({
        error: {
          code: 'INVALID_INPUT',
          message: `invalid request: ${fe.message}`,
          retryable: false,
          requestId: req.id,
        },
      });
    }
    if (
      fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
      fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
      (fe.statusCode === 400 && err instanceof SyntaxError)
    ) {
      return reply.status(400).send({
        error: {
          code: 'MALFORMED_JSON',
          message: `the request body is not valid JSON: ${fe.message}`,
          retryable: false,
          requestId: req.id,
        },
      });
    }
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.status(413).send({
        error: {
          code: 'BODY_TOO_LARGE',
          message: `the request body is larger than this route accepts (${req.routeOptions.bodyLimit} bytes); nothing was changed`,
          retryable: false,
          requestId: req.id,
        },
      });
    }
    if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply
        .status(fe.statusCode)
        .send({ error: { code: 'INVALID_INPUT', message: fe.message, retryable: false, requestId: req.id } });
    }
    // Not raised on purpose: log it whole, show a generic message with the request id.
    req.log.error({ err, reqId: req.id }, 'unexpected error');
    return reply.status(500).send({
      error: {
        code: 'INTERNAL',
        message: `internal error; see the site server log for request ${req.id}`,
        retryable: false,
        requestId: req.id,
      },
    });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({
      error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}`, retryable: false, requestId: req.id },
    }),
  );
}
