import { readFile } from 'node:fs/promises';
import type { VmView } from '../../src/vms/vm-service.js';
import type { SiteProcess } from './site-process.js';

/**
 * The write-log writer's start line of a VM's current boot: the writer scanned the disk it
 * booted with and continues after this record, so a copy that "resumes after N" holds a
 * gap-free log up to N. Read from the whole serial log, not a console tail: on a slow
 * machine the start line has scrolled out of the tail by the time a test looks.
 */
export async function writerResumedAfter(site: SiteProcess, vm: string): Promise<number> {
  const serialLog = (await site.cliJson<VmView>('vm', 'show', vm)).serialLog;
  return site.waitFor(
    `${vm}'s writer start at ${site.name}`,
    async () => {
      const m = /mamori-wl start resume_after=(\d+)/.exec(await readFile(serialLog, 'utf8').catch(() => ''));
      return m ? Number(m[1]) : undefined;
    },
    120_000,
  );
}
