/**
 * The one registry of error codes. Every code here has an entry in docs/errors.md
 * (test/unit/core/error-docs.test.ts keeps the two in sync).
 * httpStatus is what the API answers; retryable tells a client whether the same
 * request may succeed later without a change on its side.
 */
export const ERROR_CODES = {
  // input
  INVALID_INPUT: { httpStatus: 400, retryable: false },
  INVALID_NAME: { httpStatus: 400, retryable: false },
  OUT_OF_RANGE: { httpStatus: 400, retryable: false },
  PATH_OUTSIDE_POOL: { httpStatus: 400, retryable: false },
  MALFORMED_JSON: { httpStatus: 400, retryable: false },
  BODY_TOO_LARGE: { httpStatus: 413, retryable: false },
  PLAN_TOO_LARGE: { httpStatus: 413, retryable: false },
  LINK_SCHEDULE_INVALID: { httpStatus: 400, retryable: false },
  // auth
  UNAUTHORIZED: { httpStatus: 401, retryable: false },
  FORBIDDEN: { httpStatus: 403, retryable: false },
  HOST_PATH_REFUSED: { httpStatus: 403, retryable: false },
  TOO_MANY_AUTH_FAILURES: { httpStatus: 429, retryable: true },
  // the audit log (src/audit): raised by `mamori audit verify`; the API answers ok: false instead
  AUDIT_CHAIN_BROKEN: { httpStatus: 500, retryable: false },
  // lookup
  NOT_FOUND: { httpStatus: 404, retryable: false },
  VM_NOT_FOUND: { httpStatus: 404, retryable: false },
  DISK_NOT_FOUND: { httpStatus: 404, retryable: false },
  JOB_NOT_FOUND: { httpStatus: 404, retryable: false },
  JOB_CONTEXT_VERSION: { httpStatus: 409, retryable: false },
  JOB_KIND_UNKNOWN: { httpStatus: 409, retryable: false },
  JOB_INTERRUPTED: { httpStatus: 409, retryable: true },
  IMAGE_NOT_FOUND: { httpStatus: 404, retryable: false },
  PEER_NOT_FOUND: { httpStatus: 404, retryable: false },
  GROUP_NOT_FOUND: { httpStatus: 404, retryable: false },
  NETWORK_NOT_FOUND: { httpStatus: 404, retryable: false },
  PLAN_NOT_FOUND: { httpStatus: 404, retryable: false },
  RUN_NOT_FOUND: { httpStatus: 404, retryable: false },
  MAPPING_NOT_FOUND: { httpStatus: 404, retryable: false },
  DESKTOP_POOL_NOT_FOUND: { httpStatus: 404, retryable: false },
  SNAPSHOT_NOT_FOUND: { httpStatus: 404, retryable: false },
  TOKEN_NOT_FOUND: { httpStatus: 404, retryable: false },
  // conflicts and lifecycle
  VM_EXISTS: { httpStatus: 409, retryable: false },
  TOKEN_IN_USE: { httpStatus: 409, retryable: false },
  GROUP_EXISTS: { httpStatus: 409, retryable: false },
  VM_ALREADY_PROTECTED: { httpStatus: 409, retryable: false },
  NETWORK_EXISTS: { httpStatus: 409, retryable: false },
  NETWORK_IN_USE: { httpStatus: 409, retryable: false },
  PLAN_INVALID: { httpStatus: 422, retryable: false },
  PLAN_BUSY: { httpStatus: 409, retryable: true },
  RUN_INVALID_STATE: { httpStatus: 409, retryable: false },
  RUN_FAILED: { httpStatus: 409, retryable: false },
  VM_SUPERSEDED: { httpStatus: 409, retryable: false },
  REPLICA_PROMOTED: { httpStatus: 409, retryable: false },
  REPLICA_IN_USE: { httpStatus: 409, retryable: false },
  REPLICA_REMOVED: { httpStatus: 409, retryable: false },
  REPLICA_SOURCE_ACTIVE: { httpStatus: 409, retryable: false },
  FINAL_SYNC_FAILED: { httpStatus: 503, retryable: true },
  // continuous replication's write journal
  JOURNAL_CORRUPT: { httpStatus: 500, retryable: false },
  JOURNAL_WRITE_FAILED: { httpStatus: 500, retryable: false },
  DISK_EXISTS: { httpStatus: 409, retryable: false },
  DISK_IN_USE: { httpStatus: 409, retryable: false },
  VM_INVALID_STATE: { httpStatus: 409, retryable: true },
  VM_RUNNING: { httpStatus: 409, retryable: false },
  RDM_PHYSICAL_REFUSED: { httpStatus: 409, retryable: false },
  DISK_SHARED_REFUSED: { httpStatus: 409, retryable: false },
  SNAPSHOT_EXISTS: { httpStatus: 409, retryable: false },
  VM_DISKS_CHANGED: { httpStatus: 409, retryable: true },
  DESKTOP_POOL_EXISTS: { httpStatus: 409, retryable: false },
  DESKTOP_POOL_BUSY: { httpStatus: 409, retryable: true },
  MASTER_IN_USE: { httpStatus: 409, retryable: false },
  LAYER_SHARED: { httpStatus: 409, retryable: false },
  DESKTOP_ASSIGNED: { httpStatus: 409, retryable: false },
  DESKTOP_IN_SESSION: { httpStatus: 409, retryable: false },
  POOL_ADDRESSES_EXHAUSTED: { httpStatus: 409, retryable: false },
  SHARED_DISK_NOT_RDM: { httpStatus: 400, retryable: false },
  // images and devices
  IMAGE_UNREADABLE: { httpStatus: 422, retryable: false },
  FILESYSTEM_UNREADABLE: { httpStatus: 422, retryable: false },
  IMAGE_CORRUPT: { httpStatus: 422, retryable: false },
  // the store
  STORE_ROW_INVALID: { httpStatus: 500, retryable: false },
  STORE_UNAVAILABLE: { httpStatus: 503, retryable: true },
  IMAGE_FORMAT_UNSUPPORTED: { httpStatus: 422, retryable: false },
  IMAGE_UNSAFE_REFERENCE: { httpStatus: 422, retryable: false },
  DEVICE_NOT_BLOCK: { httpStatus: 422, retryable: false },
  NETWORK_UNAVAILABLE: { httpStatus: 503, retryable: false },
  POOL_FULL: { httpStatus: 507, retryable: false },
  TEST_GUEST_MISSING: { httpStatus: 503, retryable: false },
  FIRMWARE_MISSING: { httpStatus: 503, retryable: false },
  // QEMU and processes
  QEMU_START_FAILED: { httpStatus: 500, retryable: false },
  QMP_ERROR: { httpStatus: 500, retryable: false },
  QMP_TIMEOUT: { httpStatus: 504, retryable: true },
  QMP_DISCONNECTED: { httpStatus: 503, retryable: true },
  PROCESS_FAILED: { httpStatus: 500, retryable: false },
  PROCESS_TIMEOUT: { httpStatus: 504, retryable: true },
  ACCEL_UNAVAILABLE: { httpStatus: 503, retryable: false },
  // peer sites
  PEER_UNREACHABLE: { httpStatus: 503, retryable: true },
  PEER_CERT_MISMATCH: { httpStatus: 502, retryable: false },
  PEER_AUTH_FAILED: { httpStatus: 403, retryable: false },
  // alerts (src/events): the webhook incidents are posted to
  ALERT_WEBHOOK_INVALID: { httpStatus: 400, retryable: false },
  ALERT_WEBHOOK_FAILED: { httpStatus: 502, retryable: true },
  ALERT_WEBHOOK_NOT_SET: { httpStatus: 409, retryable: false },
  // the data folder and secrets at rest (src/core/secret-box.ts, src/core/data-dir-modes.ts)
  DATA_DIR_UNSAFE: { httpStatus: 500, retryable: false },
  SECRET_KEY_MISSING: { httpStatus: 500, retryable: false },
  SECRET_UNREADABLE: { httpStatus: 500, retryable: false },
  // client side
  SITE_UNREACHABLE: { httpStatus: 503, retryable: true },
  CONFIG_MISSING: { httpStatus: 400, retryable: false },
  // NBD (src/nbd): the block transfer between sites
  NBD_CONNECT_FAILED: { httpStatus: 503, retryable: true },
  NBD_PROTOCOL_ERROR: { httpStatus: 502, retryable: false },
  NBD_NEGOTIATION_FAILED: { httpStatus: 502, retryable: false },
  NBD_TLS_REQUIRED: { httpStatus: 502, retryable: false },
  NBD_TLS_FAILED: { httpStatus: 502, retryable: false },
  NBD_SERVER_ERROR: { httpStatus: 502, retryable: false },
  NBD_UNSUPPORTED: { httpStatus: 422, retryable: false },
  NBD_DISCONNECTED: { httpStatus: 503, retryable: true },
  NBD_TIMEOUT: { httpStatus: 504, retryable: true },
  NBD_URI_INVALID: { httpStatus: 400, retryable: false },
  // compression on the wire between sites (src/sites/compressed-stream.ts)
  WIRE_FRAME_INVALID: { httpStatus: 502, retryable: false },
  // catch-all for errors the code did not raise on purpose
  // storage adapters
  ADAPTER_NOT_FOUND: { httpStatus: 400, retryable: false },
  ADAPTER_UNSUPPORTED: { httpStatus: 409, retryable: false },
  ADAPTER_ERROR: { httpStatus: 502, retryable: true },
  COMPAT_UNSUPPORTED: { httpStatus: 409, retryable: false },
  ADAPTER_FAILED: { httpStatus: 502, retryable: false },
  ADAPTER_TIMEOUT: { httpStatus: 504, retryable: true },
  INTERNAL: { httpStatus: 500, retryable: false },
} as const satisfies Record<string, { httpStatus: number; retryable: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;
