import type { FastifyPluginAsync } from 'fastify';
import type { SiteNetworks } from '../../networks/site-networks.js';
import type { InventoryMappings, MappingKind } from '../../plans/inventory-mappings.js';
import { errorResponses, nameParam } from '../schemas.js';

const networkSchema = {
  type: 'object',
  required: ['name', 'kind'],
  properties: {
    name: { type: 'string' },
    kind: { type: 'string' },
    bridge: { type: ['string', 'null'] },
    createdAt: { type: ['string', 'null'] },
  },
} as const;
const mappingSchema = {
  type: 'object',
  required: ['peer', 'kind', 'source', 'target'],
  properties: {
    peer: { type: 'string' },
    kind: { type: 'string' },
    source: { type: 'string' },
    target: { type: 'string' },
    testTarget: { type: ['string', 'null'] },
    createdAt: { type: 'string' },
  },
} as const;
const ident = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' } as const;

/** Site networks (isolated test networks, host bridges) and the inventory mappings recovery plans use. */
export function networkRoutes(deps: { networks: SiteNetworks; mappings: InventoryMappings }): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/networks',
      {
        schema: {
          summary: 'Networks of this site, the built-in ones first',
          response: { 200: { type: 'array', items: networkSchema }, ...errorResponses },
        },
      },
      async () => deps.networks.list(),
    );
    app.post<{ Body: { name: string; kind: 'isolated' | 'bridge'; bridge?: string } }>(
      '/networks',
      {
        schema: {
          summary: 'Create a network: isolated (a bridge of its own, no uplink) or an existing host bridge',
          body: {
            type: 'object',
            required: ['name', 'kind'],
            additionalProperties: false,
            properties: {
              name: { type: 'string' },
              kind: { type: 'string', enum: ['isolated', 'bridge'] },
              bridge: { type: 'string' },
            },
          },
          response: { 201: networkSchema, ...errorResponses },
        },
      },
      async (req, reply) => reply.code(201).send(await deps.networks.create(req.body)),
    );
    app.delete<{ Params: { name: string } }>(
      '/networks/:name',
      {
        schema: {
          summary: 'Delete a network no VM uses',
          params: nameParam,
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await deps.networks.delete(req.params.name);
        return reply.code(204).send();
      },
    );

    app.get<{ Querystring: { peer?: string } }>(
      '/mappings',
      {
        schema: {
          summary: "Inventory mappings from paired sites' networks and pools to this site's",
          querystring: { type: 'object', additionalProperties: false, properties: { peer: ident } },
          response: { 200: { type: 'array', items: mappingSchema }, ...errorResponses },
        },
      },
      async (req) => deps.mappings.list(req.query.peer !== undefined ? { peer: req.query.peer } : {}),
    );
    app.put<{ Body: { peer: string; kind: MappingKind; source: string; target: string; testTarget?: string } }>(
      '/mappings',
      {
        schema: {
          summary: 'Create or replace a mapping (networks need an isolated test network)',
          body: {
            type: 'object',
            required: ['peer', 'kind', 'source', 'target'],
            additionalProperties: false,
            properties: {
              peer: ident,
              kind: { type: 'string', enum: ['network', 'pool'] },
              source: ident,
              target: ident,
              testTarget: ident,
            },
          },
          response: { 200: mappingSchema, ...errorResponses },
        },
      },
      async (req) => deps.mappings.set(req.body),
    );
    app.delete<{ Params: { peer: string; kind: MappingKind; source: string } }>(
      '/mappings/:peer/:kind/:source',
      {
        schema: {
          summary: 'Delete a mapping',
          params: {
            type: 'object',
            required: ['peer', 'kind', 'source'],
            properties: { peer: ident, kind: { type: 'string', enum: ['network', 'pool'] }, source: ident },
          },
          response: { 204: { type: 'null' }, ...errorResponses },
        },
      },
      async (req, reply) => {
        await deps.mappings.delete(req.params.peer, req.params.kind, req.params.source);
        return reply.code(204).send();
      },
    );
  };
}
