import { Agent } from 'node:https';

/**
 * How long a connection to a peer stays open unused. Well under the peer's own keep-alive
 * timeout (Fastify's 72 s), so this side closes first and never sends on a socket the peer is
 * closing; long enough to span the gap between one cycle's calls and the next cycle's at a
 * short RPO.
 */
export const PEER_IDLE_MS = 15_000;

/**
 * The connections a site keeps open to its peers. A replication cycle makes three calls and a
 * stream per disk; each on a new connection paid a TCP and a TLS handshake first, two round
 * trips, which over a 50 ms WAN was most of a small cycle. Node's agent keys its sockets by
 * host, port and the TLS options, the pinned CA among them: a re-paired peer (a new CA) never
 * gets a socket verified against the old one. A socket the link cut fails its request at the
 * request's own deadline, as a new one would (https-json-client.ts), and is dropped; an
 * upgraded socket (a cycle stream) leaves the pool for good.
 */
export const PEER_AGENT = new Agent({
  keepAlive: true,
  timeout: PEER_IDLE_MS,
  maxFreeSockets: 32,
  scheduling: 'lifo',
});
