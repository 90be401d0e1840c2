/**
 * The kinds of incident the site raises, named here in the events layer so the incident log
 * (and the remedies it attaches) need not import the modules that raise them.
 */

/** Open while a VM's newest point is older than its RPO. */
export const RPO_VIOLATED = 'replication.rpo-violated';
/** Open from a failed cycle until the next cycle of the VM succeeds. */
export const CYCLE_FAILED = 'replication.cycle-failed';
/** Open from a break of a VM's continuous journal (tap, link, journal) until a new one streams. */
export const JOURNAL_BROKEN = 'replication.journal-broken';
/** Open while a continuous replica's journal window, at the rate it grows, does not fit in the recovery site's room (JournalSpaceWatch). */
export const JOURNAL_SPACE = 'replication.journal-space';
/** Open from a verify whose write log is not consistent until a later verify of the VM is. */
export const POINT_VERIFY_FAILED = 'replication.point-verify-failed';
/** Open while a paired site has failed its health checks (PeerWatch). */
export const PEER_UNREACHABLE = 'site.peer-unreachable';
/** Open while a peer link cannot carry every VM's cycles in time (VMs wait past their slack); its text lists them. */
export const LINK_SATURATED = 'site.link-saturated';
/** Open while a VM waits paused on a host I/O error that outlasted its retries (io-error-resume.ts). */
export const VM_IO_PAUSED = 'vm.io-paused';
