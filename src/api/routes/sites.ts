import type { FastifyPluginAsync } from 'fastify';
import type { SitePairing, PairInput, PairingRequestBody } from '../../sites/site-pairing.js';
import type { SitePeers } from '../../sites/site-peers.js';
import { callerOf } from '../request-caller.js';
import { nameParam, peerErrorResponses } from '../schemas.js';

const identitySchema = {
  type: 'object',
  required: ['name', 'caCertPem', 'fingerprint', 'time'],
  properties: {
    name: { type: 'string' },
    caCertPem: { type: 'string' },
    fingerprint: { type: 'string' },
    time: { type: 'number', description: 'server clock, ms since the epoch' },
  },
} as const;

const fingerprintText = { type: 'string', pattern: '^[0-9A-F]{2}(:[0-9A-F]{2}){31}$' } as const;

/**
 * /site/...: this site as its peers see it (its CA, the pairing handshake, a peer's own view
 * of its pairing). /sites/...: the operator's view of paired sites (admin token only).
 */
export function siteRoutes(deps: { pairing: SitePairing; peers: SitePeers }): FastifyPluginAsync {
  const { pairing, peers } = deps;
  return async (app) => {
    app.get(
      '/site/ca',
      {
        schema: {
          summary: "This site's name and CA certificate (public: what a peer pins when pairing)",
          security: [],
          response: { 200: identitySchema, ...peerErrorResponses },
        },
      },
      async () => pairing.identity(),
    );

    app.post<{ Body: PairingRequestBody }>(
      '/site/pairing',
      {
        schema: {
          summary:
            "Pairing handshake, called by the site that runs `mamori site pair URL --token PEER_ADMIN_TOKEN`: authenticated by an HMAC proof of this site's admin token, not by a bearer token",
          security: [],
          body: {
            type: 'object',
            required: ['name', 'caCertPem', 'peerFingerprint', 'nonce', 'proof'],
            additionalProperties: false,
            properties: {
              name: { type: 'string', maxLength: 63 },
              caCertPem: { type: 'string', maxLength: 16384 },
              peerFingerprint: fingerprintText,
              nonce: { type: 'string', minLength: 32, maxLength: 128 },
              proof: { type: 'string', maxLength: 128 },
            },
          },
          response: {
            200: {
              type: 'object',
              required: ['name', 'fingerprint', 'token', 'proof'],
              properties: {
                name: { type: 'string' },
                fingerprint: { type: 'string' },
                token: { type: 'string' },
                proof: { type: 'string' },
              },
            },
            ...peerErrorResponses,
          },
        },
      },
      async (req) => pairing.accept(req.body),
    );

    app.get(
      '/site/pairing',
      {
        schema: {
          summary: 'For a paired site (site token): how this site knows the caller, and its clock',
          response: {
            200: {
              type: 'object',
              required: ['site', 'you', 'time'],
              properties: { site: { type: 'string' }, you: { type: 'string' }, time: { type: 'number' } },
            },
            ...peerErrorResponses,
          },
        },
      },
      async (req) => pairing.whoCalls(callerOf(req).id),
    );

    app.delete(
      '/site/pairing',
      {
        schema: {
          summary: 'For a paired site (site token): it unpaired, so forget it and revoke its token',
          response: {
            200: { type: 'object', required: ['forgotten'], properties: { forgotten: { type: 'string' } } },
            ...peerErrorResponses,
          },
        },
      },
      async (req) => pairing.forget(callerOf(req).id),
    );

    app.get<{ Querystring: { check?: 'true' | 'false' } }>(
      '/sites',
      {
        schema: {
          summary: 'Paired sites; with check (default) each is probed: reachability, round trip, clock offset',
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { check: { type: 'string', enum: ['true', 'false'] } },
          },
          response: { 200: { type: 'array', items: { $ref: 'Peer#' } }, ...peerErrorResponses },
        },
      },
      async (req) => peers.list({ check: req.query.check !== 'false' }),
    );

    app.post<{ Body: PairInput }>(
      '/sites',
      {
        schema: {
          summary:
            'Pair with another site, given its URL and its admin token (proven, never sent nor stored); optionally its CA fingerprint',
          body: {
            type: 'object',
            required: ['url', 'token'],
            additionalProperties: false,
            properties: {
              url: { type: 'string', minLength: 1 },
              token: { type: 'string', minLength: 1 },
              name: { type: 'string' },
              fingerprint: { type: 'string' },
            },
          },
          response: { 201: { $ref: 'Peer#' }, ...peerErrorResponses },
        },
      },
      async (req, reply) => {
        const rec = await pairing.pair(req.body);
        return reply.status(201).send(await peers.view(rec.name, { check: true }));
      },
    );

    app.get<{ Params: { name: string } }>(
      '/sites/:name',
      {
        schema: {
          summary: 'One paired site, probed',
          params: nameParam,
          response: { 200: { $ref: 'Peer#' }, ...peerErrorResponses },
        },
      },
      async (req) => peers.view(req.params.name, { check: true }),
    );

    app.get<{ Params: { name: string } }>(
      '/sites/:name/ping',
      {
        schema: {
          summary:
            'Strict check of a paired site: health and an authenticated call; fails with PEER_UNREACHABLE, PEER_CERT_MISMATCH or PEER_AUTH_FAILED',
          params: nameParam,
          response: {
            200: {
              type: 'object',
              required: ['name', 'site', 'rttMs', 'clockOffsetMs', 'knownThereAs'],
              properties: {
                name: { type: 'string' },
                site: { type: 'string' },
                rttMs: { type: 'number' },
                clockOffsetMs: { type: 'number' },
                knownThereAs: { type: 'string' },
              },
            },
            ...peerErrorResponses,
          },
        },
      },
      async (req) => peers.ping(req.params.name),
    );

    app.delete<{ Params: { name: string } }>(
      '/sites/:name',
      {
        schema: {
          summary: 'Unpair: forget the site here, revoke its token, and ask it to do the same',
          params: nameParam,
          response: {
            200: {
              type: 'object',
              required: ['name', 'peerNotified', 'peerError'],
              properties: {
                name: { type: 'string' },
                peerNotified: { type: 'boolean' },
                peerError: {
                  type: ['object', 'null'],
                  properties: { code: { type: 'string' }, message: { type: 'string' } },
                },
              },
            },
            ...peerErrorResponses,
          },
        },
      },
      async (req) => pairing.unpair(req.params.name),
    );
  };
}
