import { readFile } from 'node:fs/promises';
import fc from 'fast-check';
import { join } from 'node:path';
import { buildOvf, parseOvf } from '../../../src/convert/ovf-descriptor.js';
import { repoRoot } from '../../harness/repo-root.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';

const XML_TOKENS = [
  '<',
  '>',
  '/>',
  '</',
  '<!--',
  '-->',
  '<![CDATA[',
  ']]>',
  '&amp;',
  '&#0;',
  '&#x110000;',
  '&lt;',
  '&unknown;',
  '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>',
  '&a;',
  'xmlns',
  'ovf:',
  'rasd:',
  'ResourceType',
  'HostResource',
  'ovf:/disk/',
  'ovf:/file/',
  'capacity',
  'byte * 2^30',
  'byte * 2^-1',
  'byte * 2^400',
  'VirtualSystem',
  'Item',
  'Disk',
  'File',
  'AllocationUnits',
  'VirtualQuantity',
  'Parent',
  'InstanceID',
  'AddressOnParent',
];

/** OVF descriptors: ours (buildOvf), and ovftool's and VirtualBox's as the unit test keeps them. */
export const ovfTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'ovf',
  async seeds() {
    const ours = buildOvf({
      name: 'web01',
      vcpus: 2,
      memoryMiB: 2048,
      firmware: 'uefi',
      os: { cimId: 96, description: 'Debian 12', vmwOsType: 'debian12_64Guest' },
      disks: [
        { href: 'web01-disk1.vmdk', capacityBytes: 8 * 1024 ** 3, fileSizeBytes: 1234567 },
        { href: 'web01-disk2.vmdk', capacityBytes: 1024 ** 3 },
      ],
      nics: [
        { model: 'VmxNet3', network: 'VM Network' },
        { model: 'E1000', network: '' },
      ],
    });
    const seeds = [textSeed('buildOvf', ours)];
    // The unit test's samples of other tools' descriptors, taken from its source so there is one copy.
    const src = await readFile(join(repoRoot, 'test', 'unit', 'convert', 'ovf-descriptor.test.ts'), 'utf8');
    for (const m of src.matchAll(/^const (\w+) = `(<\?xml[\s\S]*?)`;$/gm)) seeds.push(textSeed(m[1]!, m[2]!));
    return seeds;
  },
  inputs: (seeds) => fc.oneof(textInputs(seeds, XML_TOKENS), valueInputs(seeds)),
  run(input) {
    const vs = parseOvf(input.text);
    // What the conversion sizes disks and the VM by: whole, positive, exact numbers or a refusal.
    const bad = [
      ['vcpus', vs.vcpus],
      ['memoryMiB', vs.memoryMiB],
      ...vs.disks.map((d, i) => [`disks[${i}].capacityBytes`, d.capacityBytes] as const),
    ].filter(([, v]) => !Number.isSafeInteger(v) || (v as number) < 0);
    if (bad.length > 0) throw new TypeError(`parseOvf accepted ${bad.map(([k, v]) => `${k} = ${v}`).join(', ')}`);
  },
};

/** Values that a descriptor's attributes and element texts carry: numbers at the edges, units, references, empties. */
const VALUES = [
  '',
  '0',
  '-1',
  '1',
  '3',
  '10',
  '17',
  '4294967296',
  '1e309',
  'NaN',
  '0x10',
  ' 5 ',
  '1.5',
  'byte',
  'byte * 2^20',
  'byte * 2^-1',
  'byte * 2^9999',
  'MegaBytes',
  'GB',
  'ovf:/disk/vmdisk1',
  'ovf:/disk/nothere',
  'ovf:/file/file1',
  'file1',
  'vmdisk1',
  '../../etc/passwd',
  '/abs/path.vmdk',
  'gzip',
  'identity',
  'x'.repeat(2000),
  '&amp;',
  '&#1;',
  '99999999999999999999',
  '9007199254740993',
  'constructor',
  '__proto__',
];

/** Mutations that keep the XML well formed: one to three attribute values or element texts replaced. */
function valueInputs(seeds: TextSeed[]): fc.Arbitrary<TextInput> {
  return fc.constantFrom(...seeds).chain((seed) => {
    // Spans of attribute values ("...") and of element text (>...<) in the descriptor.
    const spans = [...seed.text.matchAll(/="([^"]*)"|>([^<]+)</g)].map((m) => {
      const inner = m[1] ?? m[2]!;
      const start = m.index! + m[0].indexOf(inner, m[1] !== undefined ? 2 : 1);
      return { start, end: start + inner.length };
    });
    return fc
      .array(fc.tuple(fc.nat({ max: spans.length - 1 }), fc.constantFrom(...VALUES)), { minLength: 1, maxLength: 3 })
      .map((edits) => {
        let text = seed.text;
        // Right to left, so earlier spans keep their offsets.
        for (const [i, value] of [...new Map(edits)].sort((a, b) => b[0] - a[0])) {
          const span = spans[i]!;
          text = text.slice(0, span.start) + value.replace(/</g, '&lt;').replace(/"/g, '&quot;') + text.slice(span.end);
        }
        return { seed: seed.name, text };
      });
  });
}
