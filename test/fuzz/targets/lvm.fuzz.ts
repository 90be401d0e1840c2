import {
  parseLvmText,
  parseVolumeGroup,
  readPhysicalVolume,
  type LvmVolumeGroup,
} from '../../../src/inspect/lvm-metadata.js';
import { exactSizes } from '../invariants.js';
import { logicalVolumeReader } from '../../../src/inspect/lvm-volume-reader.js';
import { probeFilesystem } from '../../../src/inspect/filesystem-probe.js';
import type { ByteReader } from '../../../src/inspect/byte-reader.js';
import { LVM_TEXT, lvmPhysicalVolumes } from '../fuzz-fixtures.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';
import { diskTarget } from './disk-target.js';

/** A PV as findLogicalVolumes reads it, unguarded: label, metadata area, VG text, each LV's view and superblock. */
async function exercise(r: ByteReader): Promise<void> {
  const pv = await readPhysicalVolume(r);
  if (pv?.metadata == null) return;
  const vg = parseVolumeGroup(pv.metadata);
  checkGroup(vg);
  const readers = new Map(vg.pvs.filter((p) => p.uuid === pv.uuid).map((p) => [p.name, r] as const));
  for (const lv of vg.lvs) {
    const view = logicalVolumeReader(vg, lv, readers);
    if ('unreadable' in view) continue;
    await probeFilesystem(view);
    if (view.size > 0) await view.read(view.size - 1, 1);
  }
}

/** Extents and offsets place reads on the PV: exact numbers or a refusal. */
function checkGroup(vg: LvmVolumeGroup): void {
  exactSizes(`VG ${vg.name}`, {
    extentBytes: vg.extentBytes,
    seqno: vg.seqno,
    ...Object.fromEntries(vg.pvs.map((p) => [`${p.name}.peStartBytes`, p.peStartBytes])),
  });
  for (const lv of vg.lvs) {
    for (const [i, s] of lv.segments.entries()) {
      exactSizes(`LV ${lv.name} segment ${i}`, {
        startExtent: s.startExtent,
        extentCount: s.extentCount,
        ...(s.linear ? { pvExtent: s.linear.pvExtent } : {}),
      });
    }
  }
}

export const lvmPvTarget = diskTarget('lvm-pv', lvmPhysicalVolumes, exercise, { partition: true });

/** The metadata text alone, with token mutations (what a damaged or hostile PV can say). */
export const lvmTextTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'lvm-text',
  seeds: async () => [textSeed('vg0', LVM_TEXT)],
  inputs: (seeds) =>
    textInputs(seeds, [
      'extent_size',
      'pe_start',
      'start_extent',
      'extent_count',
      'stripe_count',
      'stripes',
      'segment_count',
      '"pv0"',
      '"pv9"',
      'seqno',
      '[',
      ']',
      '{',
      '}',
      '=',
      '"\\"',
    ]),
  run(input) {
    parseLvmText(input.text);
    checkGroup(parseVolumeGroup(input.text));
  },
};
