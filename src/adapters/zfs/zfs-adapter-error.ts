import type { GENERIC_ERROR_CODES } from '../adapter-protocol.js';

/**
 * The codes the ZFS adapter answers besides the protocol's generic ones, as
 * queryErrorDefinitions declares them. `retryable` says whether the same request may
 * succeed later with nothing changed by the operator: a peer host that is down comes
 * back, a dataset that is busy is released; a wrong role or a missing common snapshot
 * stays wrong until someone acts.
 */
export const ZFS_ERROR_DEFINITIONS = [
  {
    code: 'POOL_NOT_FOUND',
    description: 'A zpool named in the connection (or the peer pool named in mamori:peer) is not imported on its host.',
    retryable: false,
  },
  {
    code: 'NOT_REPLICATED',
    description:
      'The dataset has no mamori:peer property (or it is not pool/dataset): set it to replicate the dataset.',
    retryable: false,
  },
  {
    code: 'WRONG_ROLE',
    description:
      "The dataset's role does not allow the command (for example syncOnce on a target, or failover of a source).",
    retryable: false,
  },
  {
    code: 'NO_POINT',
    description: 'The target holds no snapshot yet: run syncOnce on its source first.',
    retryable: false,
  },
  {
    code: 'NO_COMMON_POINT',
    description:
      'The dataset and its peer share no snapshot, so only a full send could join them; the adapter never destroys a peer dataset to make one.',
    retryable: false,
  },
  {
    code: 'PEER_CONFLICT',
    description:
      "The peer dataset is not this dataset's target (it is a source, failed over, or replicates with another dataset); nothing was sent, so nothing there was overwritten.",
    retryable: false,
  },
  {
    code: 'PEER_UNREACHABLE',
    description: 'peerCommand could not run zfs on the peer host (connection failed, or no ZFS daemon there).',
    retryable: true,
  },
  {
    code: 'NAME_IN_USE',
    description:
      'A dataset the adapter must create (the test copy <dataset>-mamori-test) exists and is not one the adapter made.',
    retryable: false,
  },
  {
    code: 'DATASET_BUSY',
    description: 'A dataset could not be unmounted, rolled back or destroyed because it is in use.',
    retryable: true,
  },
  {
    code: 'STREAM_FAILED',
    description:
      'zfs send or zfs recv failed mid-stream; the target is left at its last complete snapshot and the next run sends from there.',
    retryable: true,
  },
  {
    code: 'ZFS_COMMAND_FAILED',
    description: 'A zfs or zpool command failed; the message carries its own error text.',
    retryable: true,
  },
] as const;

export type ZfsErrorCode = (typeof ZFS_ERROR_DEFINITIONS)[number]['code'] | (typeof GENERIC_ERROR_CODES)[number];

/** An error the adapter answers as `{"error":{code,message,details}}`; every code is declared. */
export class ZfsAdapterError extends Error {
  readonly code: ZfsErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ZfsErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'ZfsAdapterError';
    this.code = code;
    this.details = details;
  }
}

export function isZfsAdapterError(e: unknown, code?: ZfsErrorCode): e is ZfsAdapterError {
  return e instanceof ZfsAdapterError && (code === undefined || e.code === code);
}
