import type { ByteReader } from './byte-reader.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * LVM2 volume groups, read from a physical volume's own metadata (the on-disk format LVM
 * documents in lib/format_text): the label in one of the first four sectors names the PV
 * and its metadata area; the metadata area's header points at the current copy of the VG's
 * text description, which lists the PVs and, per logical volume, segments of extents. A
 * linear LV (one stripe per segment, the layout anaconda and debian-installer make) is then
 * a list of byte ranges on PVs, read like a partition. RHEL 6 and its rebuilds put the root
 * filesystem on LVM by default, so an inspector that stops at "LVM PV" misses the guest.
 */
export interface LvmPhysicalVolume {
  /** The PV's id as LVM prints it (6-4-4-4-4-4-6). */
  uuid: string;
  /** The VG text from its metadata area, or null for a PV in no VG (or without a metadata area). */
  metadata: string | null;
}

export interface LvmSegment {
  startExtent: number;
  extentCount: number;
  type: string;
  /** For a linear segment: the PV (its name in the VG, e.g. pv0) and the first extent there. */
  linear: { pv: string; pvExtent: number } | null;
}

export interface LvmLogicalVolume {
  name: string;
  visible: boolean;
  segments: LvmSegment[];
}

export interface LvmVolumeGroup {
  name: string;
  /** Bumped at each metadata change: of two copies, the higher is current. */
  seqno: number;
  /** Bytes per extent. */
  extentBytes: number;
  pvs: { name: string; uuid: string; peStartBytes: number }[];
  lvs: LvmLogicalVolume[];
}

const SECTOR = 512;
const MDA_MAGIC = ' LVM2 x[5A%r0N*>';
const MDA_HEADER_SIZE = 512;

/** The PV label and the current metadata text of a PV, or null when the view holds no LVM2 label. */
export async function readPhysicalVolume(pv: ByteReader): Promise<LvmPhysicalVolume | null> {
  const head = await pv.read(0, Math.min(pv.size, 4 * SECTOR));
  let label = -1;
  for (let s = 0; s < 4 && (s + 1) * SECTOR <= head.length; s++) {
    if (
      head.toString('latin1', s * SECTOR, s * SECTOR + 8) === 'LABELONE' &&
      head.toString('latin1', s * SECTOR + 24, s * SECTOR + 32) === 'LVM2 001'
    )
      label = s * SECTOR;
  }
  if (label < 0) return null;
  const pvh = label + head.readUInt32LE(label + 20);
  const uuid = formatId(head.toString('latin1', pvh, pvh + 32));
  // After the UUID and device size: data areas, then metadata areas, each list ended by a zero entry.
  let p = pvh + 40;
  const skipList = (): { offset: number; size: number }[] => {
    const out: { offset: number; size: number }[] = [];
    for (; p + 16 <= head.length; p += 16) {
      const offset = Number(head.readBigUInt64LE(p));
      const size = Number(head.readBigUInt64LE(p + 8));
      if (offset === 0 && size === 0) {
        p += 16;
        break;
      }
      out.push({ offset, size });
    }
    return out;
  };
  skipList();
  const mdas = skipList();
  for (const mda of mdas) {
    const text = await readMetadataArea(pv, mda.offset, mda.size);
    if (text !== null) return { uuid, metadata: text };
  }
  return { uuid, metadata: null };
}

/** The current metadata copy of one area; it is a circular buffer after its 512-byte header. */
async function readMetadataArea(pv: ByteReader, start: number, size: number): Promise<string | null> {
  if (start + MDA_HEADER_SIZE > pv.size) return null;
  const h = await pv.read(start, MDA_HEADER_SIZE);
  if (h.toString('latin1', 4, 20) !== MDA_MAGIC)
    throw new MamoriError('FILESYSTEM_UNREADABLE', `the LVM metadata area at byte ${start} has no valid header`);
  const offset = Number(h.readBigUInt64LE(40));
  const length = Number(h.readBigUInt64LE(48));
  if (offset === 0 || length === 0) return null;
  if (length > 16 * 1024 * 1024 || offset >= size)
    throw new MamoriError('FILESYSTEM_UNREADABLE', `the LVM metadata area at byte ${start} points outside itself`);
  const first = Math.min(length, size - offset);
  const parts = [await pv.read(start + offset, first)];
  if (first < length) parts.push(await pv.read(start + MDA_HEADER_SIZE, length - first));
  // Trailing NULs cut by hand: /\0+$/ backtracks quadratically over a long NUL run that is
  // not at the end (a damaged length spanning the zeroed area took minutes).
  const bytes = Buffer.concat(parts);
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  return bytes.toString('utf8', 0, end);
}

/** The VG the metadata text describes. */
export function parseVolumeGroup(text: string): LvmVolumeGroup {
  const doc = parseLvmText(text);
  const vgName = Object.keys(doc).find((k) => isSection(doc[k]));
  if (vgName === undefined) throw new MamoriError('FILESYSTEM_UNREADABLE', 'the LVM metadata names no volume group');
  const vg = doc[vgName] as LvmSection;
  const extentBytes = sectorsToBytes(vg['extent_size']);
  const pvSection = (vg['physical_volumes'] ?? {}) as LvmSection;
  const pvs = Object.entries(pvSection)
    .filter(([, v]) => isSection(v))
    .map(([name, v]) => {
      const s = v as LvmSection;
      return { name, uuid: String(s['id']), peStartBytes: sectorsToBytes(s['pe_start']) };
    });
  const lvSection = (vg['logical_volumes'] ?? {}) as LvmSection;
  const lvs = Object.entries(lvSection)
    .filter(([, v]) => isSection(v))
    .map(([name, v]) => {
      const s = v as LvmSection;
      const status = Array.isArray(s['status']) ? s['status'] : [];
      const segments = Object.entries(s)
        .filter(([k, x]) => /^segment\d+$/.test(k) && isSection(x))
        .map(([, x]) => {
          const seg = x as LvmSection;
          const stripes = Array.isArray(seg['stripes']) ? seg['stripes'] : [];
          const linear =
            seg['type'] === 'striped' && num(seg['stripe_count'] ?? 1) === 1 && stripes.length === 2
              ? { pv: String(stripes[0]), pvExtent: num(stripes[1]) }
              : null;
          return {
            startExtent: num(seg['start_extent']),
            extentCount: num(seg['extent_count']),
            type: String(seg['type']),
            linear,
          };
        })
        .sort((a, b) => a.startExtent - b.startExtent);
      return { name, visible: status.includes('VISIBLE'), segments };
    });
  return { name: vgName, seqno: num(vg['seqno'] ?? 0), extentBytes, pvs, lvs };
}

type LvmValue = string | number | LvmValue[] | LvmSection;
interface LvmSection {
  [key: string]: LvmValue;
}

function isSection(v: LvmValue | undefined): v is LvmSection {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A size in 512-byte sectors, as bytes: a count whose bytes pass 2^53 is damage, not a disk (fuzz finding). */
function sectorsToBytes(v: LvmValue | undefined): number {
  const bytes = num(v) * SECTOR;
  if (!Number.isSafeInteger(bytes))
    throw new MamoriError(
      'FILESYSTEM_UNREADABLE',
      `the LVM metadata has a size of ${String(v)} sectors, more than any disk holds`,
    );
  return bytes;
}

function num(v: LvmValue | undefined): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new MamoriError('FILESYSTEM_UNREADABLE', `the LVM metadata has ${JSON.stringify(v)} where a count belongs`);
  return v;
}

/** LVM's config syntax: `name { ... }` sections, `key = value` with strings, integers and [lists]; # comments. */
export function parseLvmText(text: string): LvmSection {
  const tokens = text.match(/"(?:[^"\\]|\\.)*"|#[^\n]*|-?\d+|[A-Za-z_][A-Za-z0-9_.+-]*|[{}[\]=,]/g) ?? [];
  const list = tokens.filter((t) => !t.startsWith('#'));
  let i = 0;
  const fail = (what: string): never => {
    throw new MamoriError('FILESYSTEM_UNREADABLE', `the LVM metadata text is malformed near token ${i} (${what})`);
  };
  const value = (): LvmValue => {
    const t = list[i++] ?? fail('a value is missing');
    if (t.startsWith('"')) return t.slice(1, -1).replace(/\\(.)/g, '$1');
    if (/^-?\d+$/.test(t)) return Number(t);
    if (t === '[') {
      const out: LvmValue[] = [];
      while (list[i] !== ']') {
        if (i >= list.length) fail('an unclosed list');
        out.push(value());
        if (list[i] === ',') i++;
      }
      i++;
      return out;
    }
    return fail(`unexpected ${t}`);
  };
  const section = (closing: boolean): LvmSection => {
    const out: LvmSection = {};
    while (i < list.length) {
      const key = list[i++]!;
      if (key === '}') {
        if (closing) return out;
        fail('an unmatched }');
      }
      if (list[i] === '{') {
        i++;
        out[key] = section(true);
      } else if (list[i] === '=') {
        i++;
        out[key] = value();
      } else fail(`${key} is neither a section nor a setting`);
    }
    if (closing) fail('an unclosed section');
    return out;
  };
  return section(false);
}

/** LVM writes its 32-character ids in groups of 6-4-4-4-4-4-6. */
function formatId(s: string): string {
  return [
    s.slice(0, 6),
    s.slice(6, 10),
    s.slice(10, 14),
    s.slice(14, 18),
    s.slice(18, 22),
    s.slice(22, 26),
    s.slice(26),
  ].join('-');
}
