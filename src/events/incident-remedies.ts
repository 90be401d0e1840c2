import { CYCLE_FAILED, LINK_SATURATED, PEER_UNREACHABLE, POINT_VERIFY_FAILED, RPO_VIOLATED } from './incident-kinds.js';

/** What a remedy is written from: the incident's kind, target and details as raised. */
export interface RemedyInput {
  kind: string;
  target: string;
  details: Record<string, unknown> | null;
}

/**
 * What the person on call can do about an incident, naming the commands that do it. Written
 * here for every kind, not in each message, so the console, `mamori events`, the webhook and a
 * test (which parses every command named here with the CLI's own parser) read the same text.
 * Worked out when an incident is read, so an old incident shows today's advice.
 */
const REMEDIES: Readonly<Record<string, (i: RemedyInput) => string>> = {
  [RPO_VIOLATED]: (i) =>
    `see why with 'mamori replicate status ${vmOf(i)}' (last error, cycle durations); ` +
    `'mamori replicate sync-now ${vmOf(i)}' takes a point now. It clears by itself once a point is newer than the RPO; ` +
    `if cycles take longer than the RPO, the link or the bandwidth limit is too slow for it`,
  [CYCLE_FAILED]: (i) =>
    `the cycle is retried by itself and the last good point is kept; ` +
    `'mamori replicate status ${vmOf(i)}' shows the last error` +
    (typeof i.details?.['jobId'] === 'string'
      ? `, 'mamori job show ${i.details['jobId']}' the failed cycle's steps`
      : '') +
    `, and 'mamori replicate sync-now ${vmOf(i)}' retries now`,
  [POINT_VERIFY_FAILED]: (i) =>
    `take a new point with 'mamori replicate sync-now ${vmOf(i)}' and check it with ` +
    `'mamori replicate verify ${vmOf(i)}'; until one verifies, recover from an older point that did`,
  [PEER_UNREACHABLE]: (i) =>
    `check the network to ${peerOf(i)} and that its site server runs; ` +
    `'mamori site ping ${peerOf(i)}' asks it now, 'mamori site list' shows what this site sees. ` +
    `If ${peerOf(i)} is gone for good, recover its VMs here with a plan in disaster mode ('mamori plan run PLAN --mode disaster')`,
  [LINK_SATURATED]: (i) =>
    `'mamori replicate status' shows each VM's lag and place in the queue. Give the link room: ` +
    `more cycles at once ('mamori site link ${peerOf(i)} --concurrency 8'), a higher or unscheduled cap ` +
    `('mamori site link ${peerOf(i)} --bandwidth none'), or longer RPOs for VMs that can bear them. ` +
    `It clears by itself once no VM waits past its slack`,
};

/** The remedy of an incident, or null for a kind that has none written (a test alert). */
export function incidentRemedy(i: RemedyInput): string | null {
  const remedy = REMEDIES[i.kind];
  return remedy ? remedy(i) : null;
}

/** The kinds that have a remedy (for the test that parses every command in them). */
export function kindsWithRemedies(): string[] {
  return Object.keys(REMEDIES);
}

/** The VM's name as raised (details.vm); the target's id if an old incident lacks it. */
function vmOf(i: RemedyInput): string {
  const vm = i.details?.['vm'];
  return typeof vm === 'string' ? vm : i.target.replace(/^vm:/, '');
}

function peerOf(i: RemedyInput): string {
  const peer = i.details?.['peer'];
  return typeof peer === 'string' ? peer : i.target.replace(/^site:/, '');
}
