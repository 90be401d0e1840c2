import type { ErrorCode } from '../core/error-codes.js';
import { MamoriError } from '../core/mamori-error.js';
import type { NbdErrnoName } from './nbd-protocol.js';

/** The registry's NBD codes (src/core/error-codes.ts, documented in docs/errors.md). */
export type NbdErrorCode = Extract<ErrorCode, `NBD_${string}`>;

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
    super(code, message, {
      details: options.errno === undefined ? options.details : { ...options.details, errno: options.errno },
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.name = 'NbdError';
    this.errno = options.errno;
  }

  /** The code, narrowed to the NBD codes. */
  get nbdCode(): NbdErrorCode {
    return this.code as NbdErrorCode;
  }
}

export function isNbdError(e: unknown, code?: NbdErrorCode): e is NbdError {
  return e instanceof NbdError && (code === undefined || e.nbdCode === code);
}
