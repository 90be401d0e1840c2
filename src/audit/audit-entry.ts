// The audit records live in store/ (issue 20: store knows rows, not services); re-exported here.
export type * from '../store/records/audit-entry.js';
