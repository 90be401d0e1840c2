/**
 * The site API's routes, parameters and answers as TypeScript types, derived from the types that
 * openapi-typescript generates from the server's own OpenAPI document (src/cli/api-schema.d.ts,
 * written by `make build`, never committed). The CLI declares no response shape of its own, so it
 * cannot read a field the API does not send; the web console does the same (web/src/api/client.ts).
 */
import type { components, paths } from './api-schema.js';

export type Method = 'get' | 'post' | 'put' | 'delete';
type Op<P extends keyof paths, M extends Method> = paths[P][M];

/** The routes that answer `M`. */
export type PathsWith<M extends Method> = {
  [P in keyof paths]: Op<P, M> extends { responses: unknown } ? P : never;
}[keyof paths];

type Success<O> = O extends { responses: infer R } ? R[Extract<keyof R, 200 | 201 | 202 | 204>] : never;
type JsonOf<X> = X extends { content: { 'application/json': infer J } } ? J : undefined;

/** The JSON body of a route's success answer (undefined for 204). */
export type ResponseOf<P extends PathsWith<M>, M extends Method> = JsonOf<Success<Op<P, M>>>;

type PathParams<O> = O extends { parameters: { path: infer T } } ? T : never;
type QueryOf<O> = O extends { parameters: { query?: infer Q } } ? Q : never;
type BodyOf<O> = O extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never;

/** A call's path parameters (filled into the route's `{name}`s), query and body, each as the route declares. */
export interface CallOptions<P extends PathsWith<M>, M extends Method> {
  path?: PathParams<Op<P, M>>;
  query?: QueryOf<Op<P, M>>;
  body?: BodyOf<Op<P, M>>;
}

/** A route's JSON request body, for a body built field by field. */
export type RequestBody<P extends PathsWith<M>, M extends Method> = NonNullable<BodyOf<Op<P, M>>>;

/** The named schemas of the document. */
export type Schemas = components['schemas'];
export type Vm = Schemas['Vm'];
export type Disk = Schemas['Disk'];
export type Job = Schemas['Job'];
export type Peer = Schemas['Peer'];
