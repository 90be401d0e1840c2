// The record types live in store/ (issue 20: store knows rows, not services); re-exported here for the services.
export * from '../store/records/disk-record.js';
