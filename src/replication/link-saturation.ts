import { slackMs, type DueCycle, type LinkQueueState } from './site-cycle-queue.js';

/** A VM the link is not keeping up with. */
export interface BehindVm {
  vm: string;
  /** Age of its newest point; null: it has none yet. */
  lagSeconds: number | null;
  rpoSeconds: number;
  /** Waiting for a slot (at place, 1 = next) or sending now. */
  state: 'queued' | 'running';
  place: number | null;
  /** How long it has been due. */
  waitedSeconds: number;
}

/**
 * Which VMs a full link is not carrying in time, from its queue at `now`: a queued VM waiting
 * past its slack (its point will be late however fast its cycle runs now; one with no point
 * yet, once it has waited a whole RPO for its first slot), and, while VMs wait, one whose
 * RPO is already broken (running or queued). Empty when the link keeps up: a short queue
 * that drains within everyone's slack is the scheduler doing its job, not an alert.
 */
export function behindOnLink(link: LinkQueueState, now: number): BehindVm[] {
  // Only a full link is saturated: with room, what waits is a VM due again behind its own
  // running cycle, which is that cycle's slowness (its RPO incident says so), not the link's.
  if (link.queued.length === 0 || link.inFlight < link.limit) return [];
  const out: BehindVm[] = [];
  const violated = (c: DueCycle): boolean => c.lastPointAt !== null && now - c.lastPointAt > c.rpoMs;
  link.queued.forEach((c, i) => {
    const late = c.lastPointAt === null ? now - c.dueAt > c.rpoMs : slackMs(c, now) < 0;
    if (late || violated(c)) out.push(behind(c, 'queued', i + 1, now));
  });
  for (const c of link.running) if (violated(c)) out.push(behind(c, 'running', null, now));
  // The furthest behind first: what the person on call reads first.
  return out.sort((a, b) => overBy(b) - overBy(a) || (a.vm < b.vm ? -1 : 1));
}

/**
 * The next instant after `now` at which behindOnLink would find a VM behind that it does not
 * find now, if the queue stays as it is: a queued VM's slack running out, a first sync having
 * waited a whole RPO, a VM's lag passing its RPO. Null: none (the link has room or nothing
 * waits). The scheduler looks again then: two VMs taking turns on a link, each breaking its RPO
 * while the other runs, change the queue only at instants when neither is late yet.
 */
export function nextLateAt(link: LinkQueueState, now: number): number | null {
  if (link.queued.length === 0 || link.inFlight < link.limit) return null;
  const at: number[] = [];
  for (const c of link.queued) {
    if (c.lastPointAt === null) at.push(c.dueAt + c.rpoMs);
    else at.push(c.lastPointAt + c.rpoMs - c.expectedMs, c.lastPointAt + c.rpoMs);
  }
  for (const c of link.running) if (c.lastPointAt !== null) at.push(c.lastPointAt + c.rpoMs);
  const future = at.filter((t) => t > now);
  return future.length === 0 ? null : Math.min(...future);
}

function behind(c: DueCycle, state: BehindVm['state'], place: number | null, now: number): BehindVm {
  return {
    vm: c.vmName,
    // Tenths: with RPOs of seconds, "lag 5s against an RPO of 5s" would hide that it is over.
    lagSeconds: c.lastPointAt === null ? null : Math.round((now - c.lastPointAt) / 100) / 10,
    rpoSeconds: c.rpoMs / 1000,
    state,
    place,
    waitedSeconds: Math.max(0, Math.round((now - c.dueAt) / 1000)),
  };
}

/** How far past its RPO a VM is (seconds); a VM with no point counts as its whole wait. */
function overBy(b: BehindVm): number {
  return b.lagSeconds === null ? b.waitedSeconds + b.rpoSeconds : b.lagSeconds - b.rpoSeconds;
}

/**
 * What holds a saturated link back: its bandwidth cap (the cap made cycles wait lately: more
 * cycles at once would only share it), or the number of cycles it may run at once (the cap is
 * not used up, or there is none: the cycles in flight, each as fast as it goes, are too few).
 */
export type LinkLimit = 'bandwidth' | 'concurrency';

/** Names listed in the message; the rest are counted (details carry them all). */
const LISTED = 10;

/** The saturated-link incident's text: the link, its limit, and each VM behind with its lag against its RPO. */
export function saturationMessage(input: {
  peer: string;
  limit: number;
  queued: number;
  behind: readonly BehindVm[];
  /** The cap in force now, bits per second; null: none. */
  bitsPerSecond: number | null;
  limitedBy: LinkLimit;
}): string {
  const cap = input.bitsPerSecond === null ? 'no bandwidth cap' : `a cap of ${mbit(input.bitsPerSecond)} now`;
  const listed = input.behind.slice(0, LISTED).map(describe);
  const more = input.behind.length - listed.length;
  return (
    `the replication link to ${input.peer} cannot carry every VM's cycles in time ` +
    `(${input.limit} cycle${input.limit === 1 ? '' : 's'} in flight at most, ${cap}, ${input.queued} waiting; ` +
    `${input.limitedBy === 'bandwidth' ? 'held back by its bandwidth cap' : 'held back by the cycles in flight, not by a bandwidth cap'}): ` +
    `${input.behind.length} VM${input.behind.length === 1 ? ' is' : 's are'} behind: ${listed.join('; ')}` +
    (more > 0 ? `; and ${more} more` : '')
  );
}

function describe(b: BehindVm): string {
  const lag =
    b.lagSeconds === null ? 'no recovery point yet' : `lag ${b.lagSeconds}s against an RPO of ${b.rpoSeconds}s`;
  const where = b.state === 'running' ? 'sending now' : `queued #${b.place}, waiting ${b.waitedSeconds}s`;
  return `${b.vm} ${lag} (${where})`;
}

function mbit(bits: number): string {
  return `${Number((bits / 1e6).toFixed(3))} Mbit/s`;
}
