import type { AnyFuzzTarget } from './fuzz-target.js';
import { adapterResponseTarget } from './targets/adapter-response.fuzz.js';
import { ext4Target } from './targets/ext4.fuzz.js';
import { fatTarget } from './targets/fat.fuzz.js';
import { linuxReleaseTarget } from './targets/linux-release.fuzz.js';
import { lvmPvTarget, lvmTextTarget } from './targets/lvm.fuzz.js';
import { nbdHandshakeTarget } from './targets/nbd-handshake.fuzz.js';
import { nbdReplyTarget } from './targets/nbd-reply.fuzz.js';
import { ntfsTarget } from './targets/ntfs.fuzz.js';
import { ovaTarget } from './targets/ova.fuzz.js';
import { ovfTarget } from './targets/ovf.fuzz.js';
import { p2vHelloTarget, p2vUrlTarget } from './targets/p2v.fuzz.js';
import { partitionTableTarget } from './targets/partition-table.fuzz.js';
import { planSpecTarget } from './targets/plan-spec.fuzz.js';
import { registryHiveTarget } from './targets/registry-hive.fuzz.js';
import { vmdkHeaderTarget } from './targets/vmdk-header.fuzz.js';
import { readImageReferences } from '../../src/images/image-references.js';
import { bufferImageBytes } from '../../src/images/image-bytes.js';

/** Every parser of outside input, one target each. */
export const FUZZ_TARGETS: readonly AnyFuzzTarget[] = [
  planSpecTarget,
  ovfTarget,
  ovaTarget,
  vmdkHeaderTarget((bytes) => readImageReferences(bufferImageBytes(bytes, 'fuzz.vmdk'), 'vmdk')),
  partitionTableTarget,
  ext4Target,
  ntfsTarget,
  fatTarget,
  lvmPvTarget,
  lvmTextTarget,
  registryHiveTarget,
  linuxReleaseTarget,
  nbdReplyTarget,
  nbdHandshakeTarget,
  adapterResponseTarget,
  p2vHelloTarget,
  p2vUrlTarget,
];

export function targetsNamed(names: readonly string[]): AnyFuzzTarget[] {
  if (names.length === 0) return [...FUZZ_TARGETS];
  const unknown = names.filter((n) => !FUZZ_TARGETS.some((t) => t.name === n));
  if (unknown.length > 0)
    throw new Error(`no fuzz target named ${unknown.join(', ')}; known: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}`);
  return FUZZ_TARGETS.filter((t) => names.includes(t.name));
}
