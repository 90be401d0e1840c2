import { ERROR_CODES, type ErrorCode } from '../core/error-codes.js';
import { MamoriError } from '../core/mamori-error.js';
import type { NbdErrnoName } from './nbd-protocol.js';

/**
 * Codes the NBD client raises, with their HTTP status and retry hint. They are meant for
 * the central registry (src/core/error-codes.ts); until they are there, NbdError carries
 * them itself, so the class works either way.
 */
export const NBD_ERROR_CODES = {
  /** Could not open the socket (no such unix socket, refused, unreachable). */
  NBD_CONNECT_FAILED: { httpStatus: 503, retryable: true },
  /** The server broke the protocol; the connection was dropped. */
  NBD_PROTOCOL_ERROR: { httpStatus: 502, retryable: false },
  /** The server refused an option during negotiation (unknown export, policy, missing meta context...). */
  NBD_NEGOTIATION_FAILED: { httpStatus: 502, retryable: false },
  /** The server insists on TLS and no TLS credentials were given. */
  NBD_TLS_REQUIRED: { httpStatus: 502, retryable: false },
  /** TLS could not be set up: server offers none, certificate not trusted, client certificate refused. */
  NBD_TLS_FAILED: { httpStatus: 502, retryable: false },
  /** The server answered a request with an error (errno name in `errno`). */
  NBD_SERVER_ERROR: { httpStatus: 502, retryable: false },
  /** The export does not offer what was asked (read-only, no trim, no such meta context...). */
  NBD_UNSUPPORTED: { httpStatus: 422, retryable: false },
  /** The connection closed (or was closed) before the request's reply; its outcome is unknown. */
  NBD_DISCONNECTED: { httpStatus: 503, retryable: true },
  /** No reply within the timeout; the request's outcome is unknown. */
  NBD_TIMEOUT: { httpStatus: 504, retryable: true },
} as const satisfies Record<string, { httpStatus: number; retryable: boolean }>;

export type NbdErrorCode = keyof typeof NBD_ERROR_CODES;

export interface NbdErrorOptions {
  details?: Record<string, unknown>;
  cause?: unknown;
  /** For NBD_SERVER_ERROR: the NBD error name (EIO, EINVAL, ENOSPC, EPERM, ...). */
  errno?: NbdErrnoName;
}

/** A MamoriError with one of the NBD codes and, for server errors, the NBD errno name. */
export class NbdError extends MamoriError {
  readonly errno: NbdErrnoName | undefined;

  constructor(code: NbdErrorCode, message: string, options: NbdErrorOptions = {}) {
    const registered = code in ERROR_CODES;
    super((registered ? code : 'INTERNAL') as ErrorCode, message, {
      details: options.errno === undefined ? options.details : { ...options.details, errno: options.errno },
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.name = 'NbdError';
    this.errno = options.errno;
    if (!registered) {
      const fields = this as unknown as { code: string; httpStatus: number; retryable: boolean };
      fields.code = code;
      fields.httpStatus = NBD_ERROR_CODES[code].httpStatus;
      fields.retryable = NBD_ERROR_CODES[code].retryable;
    }
  }

  /** The code, typed as an NBD code (the inherited `code` is typed against the registry). */
  get nbdCode(): NbdErrorCode {
    return this.code as string as NbdErrorCode;
  }
}

export function isNbdError(e: unknown, code?: NbdErrorCode): e is NbdError {
  return e instanceof NbdError && (code === undefined || e.nbdCode === code);
}
