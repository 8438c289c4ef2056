// Call metadata: multi-valued, keys case-insensitive (stored lower-case), wire form repeated KeyValue.
import type { KeyValue } from './codec';

export type Metadata = Record<string, string[]>;

/** An empty metadata map without a prototype, so keys like "__proto__" are plain keys. */
export function createMetadata(init?: Record<string, string | string[]>): Metadata {
  const md: Metadata = Object.create(null);
  for (const [k, v] of Object.entries(init ?? {})) {
    for (const value of Array.isArray(v) ? v : [v]) appendMetadata(md, k, value);
  }
  return md;
}

export function appendMetadata(md: Metadata, key: string, value: string): void {
  const k = key.toLowerCase();
  (Object.prototype.hasOwnProperty.call(md, k) ? md[k] : (md[k] = [])).push(value);
}

export function setMetadata(md: Metadata, key: string, values: string[]): void {
  md[key.toLowerCase()] = [...values];
}

/** All values of `key` (any case), or [] when absent. */
export function getMetadata(md: Metadata | undefined, key: string): string[] {
  if (!md) return [];
  const k = key.toLowerCase();
  return Object.prototype.hasOwnProperty.call(md, k) ? md[k] : [];
}

/** First value of `key`, convenient for single-valued keys like containerd-namespace-ttrpc. */
export function getMetadataValue(md: Metadata | undefined, key: string): string | undefined {
  return getMetadata(md, key)[0];
}

export function metadataFromPairs(pairs: KeyValue[]): Metadata {
  const md = createMetadata();
  for (const kv of pairs) appendMetadata(md, kv.key, kv.value);
  return md;
}

/** Wire order: keys in insertion order, values in order; keys lower-cased like Go's helpers do. */
export function metadataToPairs(md: Metadata | undefined): KeyValue[] {
  const out: KeyValue[] = [];
  if (!md) return out;
  for (const key of Object.keys(md)) {
    for (const value of md[key]) out.push({ key: key.toLowerCase(), value });
  }
  return out;
}
