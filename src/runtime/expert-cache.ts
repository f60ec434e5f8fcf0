/**
 * A least-recently-used cache of routed experts under a byte budget, shared by every MoE layer of
 * an offloaded model (offload-model.ts). Entries are whatever a bank keeps of one expert: float32
 * matrices read from a hub checkpoint, or a compressed expert's prepared parts (cached-banks.ts).
 *
 * The size of an entry is known before it is read (from the safetensors headers), so room is made
 * first and the cache never holds more than its capacity, not even while loading. The bytes
 * counted are those of the typed arrays the entry keeps alive (Float32Array / Uint8Array /
 * Int32Array byteLength), not an estimate.
 *
 * The values evicted to make room are handed to the loader, which may read into them (a hub
 * expert reuses an evicted expert's float32 buffers): no garbage per miss, and still nothing held
 * beyond the capacity, since the evicted entry is gone before its memory is refilled.
 *
 * An entry may depend on another (a compressed expert on its layer's shared base): evicting the
 * base evicts its dependents, which hold references to it, so the count stays what is really held.
 */
import { MoepressError } from '../io/errors.js';

export interface ExpertCacheStats {
  capacityBytes: number;
  /** Expert runs served from the cache. */
  hits: number;
  /** Expert runs that read the expert from the checkpoint (a compressed layer's shared entry is not counted here, only in bytesRead). */
  misses: number;
  evictions: number;
  /** Stored bytes read from the checkpoint for misses. */
  bytesRead: number;
  /** Bytes held now, and the most held at once. */
  cachedBytes: number;
  peakCachedBytes: number;
}

/** What a loader returns: the value, the bytes it holds (must equal the announced size), and the stored bytes read. */
export interface Loaded<T> {
  value: T;
  bytes: number;
  bytesRead: number;
}

interface Entry {
  value: unknown;
  bytes: number;
  /** Key of the entry this one holds references into (evicted with it). */
  parent: string | null;
  children: Set<string>;
}

export interface GetOptions {
  /** The entry this one depends on; it must be cached already and is not evicted to make room. */
  parent?: string;
}

export class ExpertCache {
  /** Map order is the LRU order: first = least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly s: ExpertCacheStats;

  constructor(readonly capacityBytes: number) {
    if (!(Number.isSafeInteger(capacityBytes) && capacityBytes > 0)) throw new MoepressError(`expert cache capacity must be a positive number of bytes, got ${capacityBytes}`);
    this.s = { capacityBytes, hits: 0, misses: 0, evictions: 0, bytesRead: 0, cachedBytes: 0, peakCachedBytes: 0 };
  }

  stats(): ExpertCacheStats {
    return { ...this.s };
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /**
   * The value under key, marked most recently used; on a miss, least recently used entries are
   * evicted until `bytes` fit, then `load` runs. Hits and misses are counted when `counted`
   * (expert runs), not for the shared entries they depend on.
   */
  get<T>(key: string, bytes: number, load: (evicted: unknown[]) => Loaded<T>, opts: GetOptions = {}, counted = true): T {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      if (counted) this.s.hits++;
      return hit.value as T;
    }
    const parent = opts.parent ?? null;
    if (parent !== null && !this.entries.has(parent)) throw new Error(`expert cache: '${key}' depends on '${parent}', which is not cached`);
    const got = load(this.makeRoom(bytes, key, parent));
    if (got.bytes !== bytes) throw new Error(`expert cache: '${key}' was announced as ${bytes} bytes but holds ${got.bytes}`);
    this.entries.set(key, { value: got.value, bytes, parent, children: new Set() });
    if (parent !== null) this.entries.get(parent)!.children.add(key);
    if (counted) this.s.misses++;
    this.s.bytesRead += got.bytesRead;
    this.s.cachedBytes += bytes;
    this.s.peakCachedBytes = Math.max(this.s.peakCachedBytes, this.s.cachedBytes);
    return got.value;
  }

  /** Evicts least recently used entries (never `keep` or its ancestors) until `bytes` more fit; returns their values. */
  private makeRoom(bytes: number, key: string, keep: string | null): unknown[] {
    const kept = new Set<string>();
    for (let k = keep; k !== null; k = this.entries.get(k)?.parent ?? null) kept.add(k);
    const evicted: unknown[] = [];
    for (const k of [...this.entries.keys()]) {
      if (this.s.cachedBytes + bytes <= this.capacityBytes) return evicted;
      if (!kept.has(k) && this.entries.has(k)) this.evict(k, evicted);
    }
    if (this.s.cachedBytes + bytes > this.capacityBytes) {
      const pinned = this.s.cachedBytes;
      throw new MoepressError(`expert cache of ${this.capacityBytes} bytes cannot hold '${key}' (${bytes} bytes${pinned ? ` beside ${pinned} bytes it depends on` : ''}); give --expert-cache at least ${bytes + pinned} bytes`);
    }
    return evicted;
  }

  private evict(key: string, evicted: unknown[]): void {
    const e = this.entries.get(key)!;
    for (const c of e.children) this.evict(c, evicted);
    evicted.push(e.value);
    this.entries.delete(key);
    if (e.parent !== null) this.entries.get(e.parent)?.children.delete(key);
    this.s.cachedBytes -= e.bytes;
    this.s.evictions++;
  }
}
