/** JSON schemas shared by routes; they feed both validation and the OpenAPI document. */
export const errorSchema = {
  $id: 'Error',
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        retryable: { type: 'boolean' },
        requestId: { type: 'string' },
        details: { type: 'object', additionalProperties: true },
      },
    },
  },
} as const;

const nullableString = { type: ['string', 'null'] } as const;

export const diskSchema = {
  $id: 'Disk',
  type: 'object',
  required: ['id', 'name', 'kind', 'format', 'path', 'sizeBytes', 'shared'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    pool: { type: 'string' },
    kind: { type: 'string', enum: ['image', 'rdm'] },
    format: { type: 'string' },
    path: { type: 'string' },
    sizeBytes: { type: 'integer' },
    rdmMode: { type: ['string', 'null'], enum: ['virtual', 'physical', null] },
    shared: { type: 'boolean' },
    vmId: nullableString,
    ownedByVm: { type: 'boolean' },
    createdAt: { type: 'string' },
  },
} as const;

export const vmSchema = {
  $id: 'Vm',
  type: 'object',
  required: ['id', 'name', 'state', 'vcpus', 'memoryMiB', 'firmware', 'machineType', 'disks', 'nics'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    state: { type: 'string', enum: ['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed'] },
    stateReason: nullableString,
    pid: { type: ['integer', 'null'] },
    vcpus: { type: 'integer' },
    memoryMiB: { type: 'integer' },
    firmware: { type: 'string', enum: ['bios', 'uefi'] },
    machineType: { type: 'string' },
    boot: { type: 'object', additionalProperties: true },
    nics: {
      type: 'array',
      items: {
        type: 'object',
        properties: { mac: { type: 'string' }, model: { type: 'string' }, network: { type: 'string' } },
      },
    },
    disks: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          kind: { type: 'string' },
          format: { type: 'string' },
          path: { type: 'string' },
          sizeBytes: { type: 'integer' },
          rdmMode: nullableString,
          shared: { type: 'boolean' },
        },
      },
    },
    stopTimeoutSec: { type: 'integer' },
    guestAgent: { type: 'boolean' },
    diskBus: { type: 'string', enum: ['virtio', 'sata'] },
    lastHeartbeatAt: nullableString,
    lastHeartbeat: nullableString,
    serialLog: { type: 'string' },
    createdAt: { type: 'string' },
  },
} as const;

export const jobSchema = {
  $id: 'Job',
  type: 'object',
  required: ['id', 'kind', 'state', 'progress', 'steps'],
  properties: {
    id: { type: 'string' },
    kind: { type: 'string' },
    state: { type: 'string', enum: ['running', 'succeeded', 'failed', 'interrupted'] },
    target: nullableString,
    progress: { type: 'number' },
    steps: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'state'],
        properties: {
          name: { type: 'string' },
          state: { type: 'string', enum: ['pending', 'running', 'done', 'failed', 'skipped'] },
          startedAt: { type: 'string' },
          endedAt: { type: 'string' },
        },
      },
    },
    result: {},
    // What the job's recovery rule needs, and live figures some jobs publish (a migration's RAM and disks).
    context: {},
    contextVersion: { type: ['integer', 'null'] },
    error: { type: ['object', 'null'], properties: { code: { type: 'string' }, message: { type: 'string' } } },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
  },
} as const;

export const nameParam = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 63 } },
} as const;

export const errorResponses = {
  400: { $ref: 'Error#' },
  401: { $ref: 'Error#' },
  404: { $ref: 'Error#' },
  409: { $ref: 'Error#' },
  403: { $ref: 'Error#' },
  422: { $ref: 'Error#' },
  // TOO_MANY_AUTH_FAILURES: any route behind a token answers it to an address guessing tokens.
  429: { $ref: 'Error#' },
  500: { $ref: 'Error#' },
  502: { $ref: 'Error#' },
  503: { $ref: 'Error#' },
  504: { $ref: 'Error#' },
  507: { $ref: 'Error#' },
} as const;

/** Replication's budget on the link to a peer (PUT /sites/{name}/link sets it). */
export const peerLinkSchema = {
  type: 'object',
  required: ['bitsPerSecond', 'schedule', 'concurrency'],
  properties: {
    bitsPerSecond: { type: ['integer', 'null'], description: 'bandwidth cap in bits per second; null: none' },
    schedule: {
      type: ['string', 'null'],
      description: "windows the cap applies in, this site's local time ('Mon-Fri 08:00-18:00'); null: always",
    },
    concurrency: { type: 'integer', description: 'replication cycles in flight on the link at most' },
  },
} as const;

export const peerSchema = {
  $id: 'Peer',
  type: 'object',
  required: ['name', 'url', 'fingerprint', 'direction', 'pairedAt', 'status', 'link'],
  properties: {
    name: { type: 'string' },
    url: nullableString,
    fingerprint: { type: 'string', description: 'SHA-256 of the pinned CA certificate of the peer' },
    direction: { type: 'string', enum: ['both', 'outbound', 'inbound'] },
    pairedAt: { type: 'string' },
    updatedAt: { type: 'string' },
    status: {
      type: 'object',
      required: ['state'],
      properties: {
        state: { type: 'string', enum: ['reachable', 'unreachable', 'cert-mismatch', 'not-callable', 'not-checked'] },
        checkedAt: nullableString,
        rttMs: { type: ['number', 'null'] },
        clockOffsetMs: {
          type: ['number', 'null'],
          description: 'peer clock minus local clock, ms (midpoint estimate)',
        },
        error: { type: ['object', 'null'], properties: { code: { type: 'string' }, message: { type: 'string' } } },
      },
    },
    link: peerLinkSchema,
  },
} as const;

/** For routes that call a peer site or need a role: adds FORBIDDEN/PEER_AUTH_FAILED (403) and PEER_CERT_MISMATCH (502). */
export const peerErrorResponses = {
  ...errorResponses,
  403: { $ref: 'Error#' },
  502: { $ref: 'Error#' },
} as const;
