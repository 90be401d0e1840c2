import { MamoriError } from '../core/mamori-error.js';

/** Every fat-* module raises the same error code; each message names the structure and what to do. */
export function unreadable(message: string): MamoriError {
  return new MamoriError('FILESYSTEM_UNREADABLE', message);
}
