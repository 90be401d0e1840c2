import {
  CYCLE_FAILED,
  JOURNAL_BROKEN,
  JOURNAL_SPACE,
  LINK_SATURATED,
  PEER_UNREACHABLE,
  POINT_VERIFY_FAILED,
  RPO_VIOLATED,
  VM_IO_PAUSED,
} from './incident-kinds.js';

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
  [JOURNAL_BROKEN]: (i) =>
    `the VM is protected by cycles meanwhile (its bitmap recorded every write), and the journal starts again by itself ` +
    `over a new point; 'mamori replicate status ${vmOf(i)}' shows the journal's state and why it broke. ` +
    `If the link is the cause, fix it; points in time before the break stay recoverable`,
  [JOURNAL_SPACE]: (i) =>
    `'mamori replica show ${i.target.slice(i.target.indexOf(':') + 1)}' shows what the journal holds, the rate it grows at and its room. ` +
    `Free space where this site keeps its replicas, or shorten the window at ${String(i.details?.['source'] ?? 'the protected site')} ` +
    `(disable continuous replication of the VM and enable it again with a shorter --journal). ` +
    `Left as is, the journal fills the storage, its writes fail and the VM falls back to cycles`,
  [POINT_VERIFY_FAILED]: (i) =>
    `take a new point with 'mamori replicate sync-now ${vmOf(i)}' and check it with ` +
    `'mamori replicate verify ${vmOf(i)}'; until one verifies, recover from an older point that did`,
  [PEER_UNREACHABLE]: (i) =>
    `check the network to ${peerOf(i)} and that its site server runs; ` +
    `'mamori site ping ${peerOf(i)}' asks it now, 'mamori site list' shows what this site sees. ` +
    `If ${peerOf(i)} is gone for good, recover its VMs here with a plan in disaster mode ('mamori plan run PLAN --mode disaster')`,
  [VM_IO_PAUSED]: (i) =>
    `the guest's request is held, not failed: fix what the message names under ${vmOf(i)}'s disk (free space, ` +
    `bring its storage back), then 'mamori vm resume ${vmOf(i)}' and QEMU retries it. It clears once the VM runs or stops`,
  [LINK_SATURATED]: (i) => `'mamori replicate status' shows each VM's lag and place in the queue. ${linkRoom(i)}`,
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

/** What gives a saturated link room, first what holds it back as the incident found (details.limitedBy). */
function linkRoom(i: RemedyInput): string {
  const peer = peerOf(i);
  const limit = i.details?.['limit'];
  // Whole commands with literal numbers (every command named in src/ is parsed by a test).
  const more =
    typeof limit === 'number' && limit >= 8
      ? `'mamori site link ${peer} --concurrency 32'`
      : `'mamori site link ${peer} --concurrency 8'`;
  const clears = `It clears once no VM has waited past its slack for half a minute`;
  const lessData = `or longer RPOs for VMs that can bear them`;
  if (i.details?.['limitedBy'] === 'bandwidth')
    return (
      `Its bandwidth cap is used up, so more cycles at once would only share it: raise the cap or narrow its ` +
      `schedule ('mamori site link ${peer} --bandwidth none' lifts it), ${lessData}. ${clears}`
    );
  if (i.details?.['limitedBy'] === 'concurrency')
    return (
      `Its cycles in flight are the limit, not a bandwidth cap: let more run at once ` +
      `(${more}), ${lessData}; if cycles stay slow with more in flight, ` +
      `the network itself is full. ${clears}`
    );
  return (
    `Give the link room: more cycles at once (${more}), a higher or ` +
    `unscheduled cap ('mamori site link ${peer} --bandwidth none'), ${lessData}. ${clears}`
  );
}

function peerOf(i: RemedyInput): string {
  const peer = i.details?.['peer'];
  return typeof peer === 'string' ? peer : i.target.replace(/^site:/, '');
}
