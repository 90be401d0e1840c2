import type { FatGeometry } from './fat-boot-sector.js';
import { unreadable } from './fat-errors.js';
import type { FatVolume } from './fat-volume.js';

/** The FAT is fetched in pieces this big (a multiple of every entry width and sector size). */
const FAT_CHUNK_BYTES = 1024 * 1024;

/**
 * The File Allocation Table: follows cluster chains through 12-, 16- or 32-bit entries. The FAT
 * is read in large cached chunks, since a chain hops around it and each read may be a round trip.
 */
export class FatTable {
  readonly #volume: FatVolume;
  readonly #geometry: FatGeometry;
  readonly #fatChunks = new Map<number, Promise<Buffer>>();

  constructor(volume: FatVolume, geometry: FatGeometry) {
    this.#volume = volume;
    this.#geometry = geometry;
  }

  /**
   * Up to maxClusters clusters of the chain starting at first. Stops at an end-of-chain marker;
   * throws on a loop, a bad-cluster marker, or a cluster number outside the volume.
   */
  async clusterChain(first: number, maxClusters: number, what: string): Promise<number[]> {
    const chain: number[] = [];
    const seen = new Set<number>();
    let cluster = first;
    let cameFrom: number | null = null;
    for (;;) {
      this.#checkClusterNumber(cluster, cameFrom, what);
      if (seen.has(cluster)) {
        throw unreadable(
          `The FAT cluster chain of ${what} loops: the FAT entry of cluster ${cameFrom} (byte offset ${this.#fatEntryOffset(cameFrom ?? 0)} of the partition) leads back to cluster ${cluster}. The filesystem is damaged (run fsck.fat on a copy).`,
        );
      }
      seen.add(cluster);
      chain.push(cluster);
      if (chain.length >= maxClusters) return chain;
      const next = await this.#fatEntry(cluster, what);
      if (next >= this.#endOfChainMin()) return chain;
      cameFrom = cluster;
      cluster = next;
    }
  }

  #checkClusterNumber(cluster: number, cameFrom: number | null, what: string): void {
    const last = this.#geometry.clusterCount + 1;
    if (cluster >= 2 && cluster <= last) return;
    const source =
      cameFrom === null
        ? 'its directory entry'
        : `the FAT entry of cluster ${cameFrom} (byte offset ${this.#fatEntryOffset(cameFrom)} of the partition)`;
    const meaning =
      cluster === this.#badClusterMarker()
        ? 'the bad-cluster marker'
        : `cluster ${cluster}, outside the volume's clusters 2..${last}`;
    throw unreadable(
      `The FAT cluster chain of ${what} is broken: ${source} gives ${meaning}. The filesystem is damaged (run fsck.fat on a copy).`,
    );
  }

  #endOfChainMin(): number {
    switch (this.#geometry.info.type) {
      case 'fat12':
        return 0xff8;
      case 'fat16':
        return 0xfff8;
      case 'fat32':
        return 0x0ffffff8;
    }
  }

  #badClusterMarker(): number {
    return this.#endOfChainMin() - 1;
  }

  /** Byte offset of a cluster's entry within the FAT (12-bit entries take one and a half bytes). */
  #fatEntryIndexBytes(cluster: number): number {
    switch (this.#geometry.info.type) {
      case 'fat12':
        return cluster + (cluster >> 1);
      case 'fat16':
        return cluster * 2;
      case 'fat32':
        return cluster * 4;
    }
  }

  #fatEntryOffset(cluster: number): number {
    return this.#geometry.fatOffset + this.#fatEntryIndexBytes(cluster);
  }

  async #fatEntry(cluster: number, what: string): Promise<number> {
    const at = this.#fatEntryIndexBytes(cluster);
    const width = this.#geometry.info.type === 'fat32' ? 4 : 2;
    if (at + width > this.#geometry.fatBytes) {
      throw unreadable(
        `The FAT cluster chain of ${what} reaches cluster ${cluster}, whose entry would lie past the end of the ${this.#geometry.fatBytes}-byte FAT at byte offset ${this.#geometry.fatOffset}; the boot sector or the FAT is damaged.`,
      );
    }
    const chunkIndex = Math.floor(at / FAT_CHUNK_BYTES);
    const chunk = await this.#fatChunk(chunkIndex);
    const inChunk = at - chunkIndex * FAT_CHUNK_BYTES;
    switch (this.#geometry.info.type) {
      case 'fat32':
        return chunk.readUInt32LE(inChunk) & 0x0fffffff; // the top 4 bits are reserved
      case 'fat16':
        return chunk.readUInt16LE(inChunk);
      case 'fat12': {
        // A 12-bit entry can straddle two chunks.
        const low = chunk.readUInt8(inChunk);
        const high =
          inChunk + 1 < chunk.length
            ? chunk.readUInt8(inChunk + 1)
            : (await this.#fatChunk(chunkIndex + 1)).readUInt8(0);
        const pair = low | (high << 8);
        return (cluster & 1) === 1 ? pair >> 4 : pair & 0xfff;
      }
    }
  }

  #fatChunk(index: number): Promise<Buffer> {
    let pending = this.#fatChunks.get(index);
    if (pending === undefined) {
      const start = index * FAT_CHUNK_BYTES;
      const length = Math.min(FAT_CHUNK_BYTES, this.#geometry.fatBytes - start);
      pending = this.#volume.readAt(this.#geometry.fatOffset + start, length, 'the FAT');
      pending.catch(() => this.#fatChunks.delete(index));
      this.#fatChunks.set(index, pending);
    }
    return pending;
  }
}
