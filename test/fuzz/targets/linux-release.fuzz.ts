import { linuxHostname, linuxRelease } from '../../../src/inspect/linux-release.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { textInputs, textSeed, type TextInput, type TextSeed } from '../text-mutations.js';

/** The release files a guest's root holds, as the inspector reads them (os-release, redhat-release, hostname). */
const FILES: Record<string, string> = {
  '/etc/os-release':
    'PRETTY_NAME="Ubuntu 22.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nVERSION="22.04.3 LTS (Jammy Jellyfish)"\nID=ubuntu\nID_LIKE=debian\n',
  '/etc/redhat-release': 'Red Hat Enterprise Linux Server release 6.10 (Santiago)\n',
  '/etc/sysconfig/network': 'NETWORKING=yes\nHOSTNAME="rhel6.example.com"\n',
};

/**
 * The guest's words become the report's fields, so beyond "no exception" the result must
 * keep its types: a distro is a string whatever ID says (an ID of "constructor" must not
 * reach an object's prototype).
 */
export const linuxReleaseTarget: FuzzTarget<TextSeed, TextInput> = {
  name: 'linux-release',
  seeds: async () => Object.entries(FILES).map(([path, text]) => textSeed(path, text)),
  inputs: (seeds) =>
    textInputs(seeds, [
      'ID',
      'VERSION_ID',
      'PRETTY_NAME',
      'HOSTNAME',
      '=',
      '"',
      "'",
      '\\',
      'release',
      '__proto__',
      'constructor',
      'hasOwnProperty',
      '99999999999999999999999',
    ]),
  async run(input) {
    const files = new Map([[input.seed, input.text]]);
    const fs = {
      readFile: async (p: string) => (files.has(p) ? Buffer.from(files.get(p)!) : null),
      listDir: async () => [],
    };
    const release = await linuxRelease(fs);
    const hostname = await linuxHostname(fs);
    if (
      release !== null &&
      (typeof release.distro !== 'string' || (release.product !== null && typeof release.product !== 'string'))
    ) {
      throw new TypeError(
        `linuxRelease returned distro ${String(release.distro)} (${typeof release.distro}), product ${typeof release.product}`,
      );
    }
    if (hostname !== null && typeof hostname !== 'string')
      throw new TypeError(`linuxHostname returned a ${typeof hostname}`);
  },
};
