import type { PendingRequest } from '../../src/nbd/nbd-pending-request.js';
import { NbdReplyReader } from '../../src/nbd/nbd-reply-reader.js';

/**
 * A reply reader wired as NbdTransmission wires it, over a map of requests in flight: each
 * reply goes to its request, and a request is dropped from the map once its reply is complete.
 */
export function replyReaderFor(structured: boolean, pending: Map<bigint, PendingRequest>): NbdReplyReader {
  const done = (cookie: bigint, finished: boolean): void => {
    if (finished) pending.delete(cookie);
  };
  return new NbdReplyReader(structured, {
    lookup: (cookie) => pending.get(cookie),
    simple: (cookie, error) => done(cookie, pending.get(cookie)!.simple(error)),
    data: (h, offset, length) => done(h.cookie, pending.get(h.cookie)!.data(h, offset, length)),
    chunk: (h, payload) => done(h.cookie, pending.get(h.cookie)!.chunk(h, payload)),
  });
}
