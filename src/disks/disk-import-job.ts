import { basename, dirname, join } from 'node:path';
import { defineJobKind } from '../jobs/job-kind.js';
import type { ImageFormat } from './disk-record.js';

/*
 * The import of an image into the disk pool as a job (DiskService.startImport runs it): its
 * kind, its input, the formats it takes, and where its temporary copy lives.
 */

/** An image copied into the pool and registered as a disk; a cut one leaves neither. */
export const IMPORT_JOB = defineJobKind<ImportJobContext>({
  kind: 'disk-import',
  policy: 'rollback',
  steps: ['convert', 'register'],
  summary: 'An image imported into the disk pool: convert, register',
  context: {
    version: 1,
    schema: {
      type: 'object',
      required: ['disk', 'path'],
      properties: { disk: { type: 'string' }, path: { type: 'string' } },
    },
  },
});

/** The disk the register step makes, written before its row: a recovery removes only that one. */
export interface ImportJobContext {
  disk: string;
  path: string;
}
export interface ImportInput {
  name: string;
  source: string;
  /** The image is this byte range of `source` (a VMDK inside an OVA), read in place. */
  member?: { offset: number; size: number };
  format?: string;
  targetFormat?: ImageFormat;
}

/** Formats QEMU imports from other hypervisors; the name is qemu-img's. */
export const IMPORT_FORMATS = ['qcow2', 'raw', 'vmdk', 'vpc', 'vhdx'] as const;
export const FORMAT_ALIASES: Record<string, string> = { vhd: 'vpc' };
export const EXTENSION_FORMATS: Record<string, string> = {
  '.vmdk': 'vmdk',
  '.vhd': 'vpc',
  '.vhdx': 'vhdx',
  '.qcow2': 'qcow2',
};

/** Where an import copies before the rename into place: beside the final file, named after its job. */
export function importTempPath(finalPath: string, jobId: string): string {
  return join(dirname(finalPath), `.${basename(finalPath)}.${jobId}.importing`);
}
