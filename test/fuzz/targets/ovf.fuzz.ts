import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildOvf, parseOvf } from '../../../src/convert/ovf-descriptor.js';
import { repoRoot } from '../../harness/repo-root.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';

const XML_TOKENS = ['<', '>', '/>', '</', '<!--', '-->', '<![CDATA[', ']]>', '&amp;', '&#0;', '&#x110000;', '&lt;', '&unknown;', '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>',
  '&a;', 'xmlns', 'ovf:', 'rasd:', 'ResourceType', 'HostResource', 'ovf:/disk/', 'ovf:/file/', 'capacity', 'byte * 2^30', 'byte * 2^-1', 'byte * 2^400',
  'VirtualSystem', 'Item', 'Disk', 'File', 'AllocationUnits', 'VirtualQuantity', 'Parent', 'InstanceID', 'AddressOnParent'];

/** OVF descriptors: ours (buildOvf), and ovftool's and VirtualBox's as the unit test keeps them. */
export const ovfTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'ovf',
  async seeds() {
    const ours = buildOvf({
      name: 'web01', vcpus: 2, memoryMiB: 2048, firmware: 'uefi', os: { cimId: 96, description: 'Debian 12', vmwOsType: 'debian12_64Guest' },
      disks: [{ href: 'web01-disk1.vmdk', capacityBytes: 8 * 1024 ** 3, fileSizeBytes: 1234567 }, { href: 'web01-disk2.vmdk', capacityBytes: 1024 ** 3 }],
      nics: [{ model: 'VmxNet3', network: 'VM Network' }, { model: 'E1000', network: '' }],
    });
    const seeds = [textSeed('buildOvf', ours)];
    // The unit test's samples of other tools' descriptors, taken from its source so there is one copy.
    const src = await readFile(join(repoRoot, 'test', 'unit', 'convert', 'ovf-descriptor.test.ts'), 'utf8');
    for (const m of src.matchAll(/^const (\w+) = `(<\?xml[\s\S]*?)`;$/gm)) seeds.push(textSeed(m[1]!, m[2]!));
    return seeds;
  },
  inputs: (seeds) => textInputs(seeds, XML_TOKENS),
  run(input) {
    parseOvf(input.text);
  },
};
