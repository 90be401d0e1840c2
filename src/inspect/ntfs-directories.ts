import { unreadable } from './ntfs-errors.js';
import { applyFixups } from './ntfs-fixups.js';
import { isPowerOfTwo, refRecord, refSequence, s64 } from './ntfs-integers.js';
import type { NtfsMft } from './ntfs-mft.js';
import { ATTR_FILE_NAME, ATTR_INDEX_ALLOCATION, ATTR_INDEX_ROOT, type MftRecord } from './ntfs-mft-record.js';
import { compareNamesIgnoringCase } from './ntfs-names.js';
import { streamSize, type Stream } from './ntfs-stream.js';
import type { NtfsVolume } from './ntfs-volume.js';

// ---------------------------------------------------------------------------------------------
// Directory indexes ($I30 B+tree keyed by $FILE_NAME)

const MAX_INDEX_ENTRIES_PER_NODE = 8192;
const MAX_TREE_DEPTH = 16;
const INDEX_BLOCK_CACHE_LIMIT = 2048;

const INDEX_ENTRY_HAS_CHILD = 0x01;
const INDEX_ENTRY_LAST = 0x02;
/** $FILE_NAME flag "has a $I30 index", i.e. the name belongs to a directory. */
const FILE_NAME_FLAG_DIRECTORY = 0x10000000;

const I30 = '$I30';

interface IndexEntry {
  recordNo: number;
  sequence: number;
  name: string;
  namespace: number;
  isDirectory: boolean;
  /** VCN of the child node holding names that sort before this entry. */
  childVcn: number | null;
  isLast: boolean;
}

/** Parses the entries after an index header (the one in $INDEX_ROOT or in an INDX block). */
function parseIndexEntries(buf: Buffer, headerPos: number, what: string, volumeOffset: number): IndexEntry[] {
  if (headerPos + 16 > buf.length) unreadable(`${what} has a truncated index header`, volumeOffset + headerPos);
  const start = headerPos + buf.readUInt32LE(headerPos);
  const end = Math.min(headerPos + buf.readUInt32LE(headerPos + 4), buf.length);
  const entries: IndexEntry[] = [];
  let pos = start;
  for (let count = 0; count < MAX_INDEX_ENTRIES_PER_NODE; count++) {
    if (pos + 16 > end) unreadable(`${what} ends without a last index entry`, volumeOffset + pos);
    const length = buf.readUInt16LE(pos + 8);
    const keyLength = buf.readUInt16LE(pos + 10);
    const flags = buf.readUInt16LE(pos + 12);
    const hasChild = (flags & INDEX_ENTRY_HAS_CHILD) !== 0;
    if (length < 16 + (hasChild ? 8 : 0) || pos + length > end || 16 + keyLength > length) {
      unreadable(`${what} has an index entry of impossible length ${length}`, volumeOffset + pos);
    }
    const isLast = (flags & INDEX_ENTRY_LAST) !== 0;
    const childVcn = hasChild ? s64(buf, pos + length - 8) : null;
    entries.push({
      ...(isLast ? emptyKey() : parseFileNameKey(buf, pos + 16, keyLength, what, volumeOffset)),
      recordNo: refRecord(buf, pos),
      sequence: refSequence(buf, pos),
      childVcn,
      isLast,
    });
    if (isLast) return entries;
    pos += length;
  }
  unreadable(`${what} has too many index entries`, volumeOffset + start);
}

function emptyKey(): Pick<IndexEntry, 'name' | 'namespace' | 'isDirectory'> {
  return { name: '', namespace: 0, isDirectory: false };
}

/** The key of an $I30 entry is a copy of the file's $FILE_NAME value. */
function parseFileNameKey(
  buf: Buffer,
  pos: number,
  keyLength: number,
  what: string,
  volumeOffset: number,
): Pick<IndexEntry, 'name' | 'namespace' | 'isDirectory'> {
  if (keyLength < 0x42) unreadable(`${what} has a file name key of only ${keyLength} bytes`, volumeOffset + pos);
  const nameLength = buf.readUInt8(pos + 0x40);
  if (0x42 + 2 * nameLength > keyLength) unreadable(`${what} has a file name longer than its key`, volumeOffset + pos);
  return {
    name: buf.toString('utf16le', pos + 0x42, pos + 0x42 + 2 * nameLength),
    namespace: buf.readUInt8(pos + 0x41),
    isDirectory: (buf.readUInt32LE(pos + 0x38) & FILE_NAME_FLAG_DIRECTORY) !== 0,
  };
}

interface DirectoryIndex {
  recordNo: number;
  rootEntries: IndexEntry[];
  blockSize: number;
  /** Bytes per VCN of the allocation: a cluster, or 512 when index blocks are smaller than a cluster. */
  vcnSize: number;
  allocation: Stream | null;
}

/**
 * Opens directories' $I30 indexes and searches them: one root-to-leaf descent per name looked
 * up, or a walk of every node when a whole folder is listed. INDX blocks are cached because
 * every lookup on a path passes through the same upper nodes.
 */
export class NtfsDirectories {
  readonly #mft: NtfsMft;
  readonly #volume: NtfsVolume;
  readonly #clusterSize: number;
  readonly #indexBlockCache = new Map<string, Buffer>();

  constructor(mft: NtfsMft, volume: NtfsVolume, clusterSize: number) {
    this.#mft = mft;
    this.#volume = volume;
    this.#clusterSize = clusterSize;
  }

  async openDirectoryIndex(record: MftRecord): Promise<DirectoryIndex | null> {
    const rootStream = await this.#mft.openStream(record, ATTR_INDEX_ROOT, I30);
    if (rootStream === null) return null;
    const what = `$INDEX_ROOT of MFT record ${record.recordNo}`;
    if (rootStream.kind !== 'resident' || rootStream.value.length < 0x20)
      unreadable(`${what} is malformed`, record.volumeOffset);
    const root = rootStream.value;
    if (root.readUInt32LE(0) !== ATTR_FILE_NAME) unreadable(`${what} does not index file names`, record.volumeOffset);
    const blockSize = root.readUInt32LE(8);
    if (!isPowerOfTwo(blockSize) || blockSize < 512 || blockSize > 65536)
      unreadable(`${what} gives an index block size of ${blockSize}`, record.volumeOffset);
    const cs = this.#clusterSize;
    return {
      recordNo: record.recordNo,
      rootEntries: parseIndexEntries(root, 0x10, what, record.volumeOffset),
      blockSize,
      vcnSize: blockSize >= cs ? cs : 512,
      allocation: await this.#mft.openStream(record, ATTR_INDEX_ALLOCATION, I30),
    };
  }

  async #readIndexNode(index: DirectoryIndex, vcn: number): Promise<IndexEntry[]> {
    const what = `index block (INDX) at VCN ${vcn} of directory MFT record ${index.recordNo}`;
    const allocation = index.allocation;
    if (allocation === null) unreadable(`${what} is referenced but the directory has no $INDEX_ALLOCATION`);
    const offset = vcn * index.vcnSize;
    const volumeOffset = allocation.kind === 'runs' ? this.#volume.volumeOffsetOf(allocation.runs, offset) : -1;
    const key = `${index.recordNo}:${vcn}`;
    let block = this.#indexBlockCache.get(key);
    if (block === undefined) {
      if (vcn < 0 || offset + index.blockSize > streamSize(allocation))
        unreadable(`${what} lies outside the index allocation`);
      block = applyFixups(
        await this.#volume.readStream(allocation, offset, index.blockSize, what),
        'INDX',
        what,
        volumeOffset,
      );
      if (s64(block, 0x10) !== vcn) unreadable(`${what} says it is VCN ${s64(block, 0x10)}`, volumeOffset);
      if (this.#indexBlockCache.size >= INDEX_BLOCK_CACHE_LIMIT) this.#indexBlockCache.clear();
      this.#indexBlockCache.set(key, block);
    }
    return parseIndexEntries(block, 0x18, what, volumeOffset);
  }

  /** Descends the B+tree: in each node, the first entry sorting after the name leads to the child holding it. */
  async findEntry(index: DirectoryIndex, name: string): Promise<IndexEntry | null> {
    let entries = index.rootEntries;
    for (let depth = 0; depth <= MAX_TREE_DEPTH; depth++) {
      let next: number | null = null;
      for (const entry of entries) {
        const order = entry.isLast ? -1 : compareNamesIgnoringCase(name, entry.name);
        if (order === 0) return entry;
        if (order < 0) {
          next = entry.childVcn;
          break;
        }
      }
      if (next === null) return this.#findEntryByScan(index, name);
      entries = await this.#readIndexNode(index, next);
    }
    unreadable(`the index of directory MFT record ${index.recordNo} is deeper than ${MAX_TREE_DEPTH} levels`);
  }

  /** Only for non-ASCII names, where the volume's $UpCase order may differ from ours. */
  async #findEntryByScan(index: DirectoryIndex, name: string): Promise<IndexEntry | null> {
    if (/^[\x00-\x7f]*$/.test(name)) return null;
    const all = await this.allIndexEntries(index);
    return all.find((e) => compareNamesIgnoringCase(name, e.name) === 0) ?? null;
  }

  /** Every entry of one directory, visiting each node of its tree once. */
  async allIndexEntries(index: DirectoryIndex): Promise<IndexEntry[]> {
    const found: IndexEntry[] = [];
    const visited = new Set<number>();
    const maxNodes = index.allocation === null ? 0 : Math.ceil(streamSize(index.allocation) / index.blockSize);
    const walk = async (entries: IndexEntry[], depth: number): Promise<void> => {
      for (const entry of entries) {
        if (entry.childVcn !== null) {
          if (depth >= MAX_TREE_DEPTH)
            unreadable(`the index of directory MFT record ${index.recordNo} is deeper than ${MAX_TREE_DEPTH} levels`);
          if (visited.has(entry.childVcn) || visited.size >= maxNodes)
            unreadable(`the index of directory MFT record ${index.recordNo} links a block twice`);
          visited.add(entry.childVcn);
          await walk(await this.#readIndexNode(index, entry.childVcn), depth + 1);
        }
        if (!entry.isLast) found.push(entry);
      }
    };
    await walk(index.rootEntries, 0);
    return found;
  }
}
