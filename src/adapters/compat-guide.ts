import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHECKOUT_ROOT } from '../core/checkout-root.js';
import { MamoriError } from '../core/mamori-error.js';
import { OPENZFS_FEATURE_SETS, featureSetFeatures, featureSetNamed } from './openzfs-feature-sets.js';

/** The mamori version the guide's rows are matched against. */
export const MAMORI_VERSION = '0.1.0';

/** The guide shipped with mamori (compat/guide.json at the checkout's root). */
export const SHIPPED_GUIDE = join(CHECKOUT_ROOT, 'compat', 'guide.json');

/**
 * One tested pairing, VMware Compatibility Guide style: an adapter (at a version) with an
 * array model running given software versions, the protocol, the mamori versions it was
 * tested with, and the conformance suite's result. Rows are written by `mamori adapter test
 * --record`, from the run itself, never by hand.
 *
 * A row matches an array's software in one of two ways. A row that names features
 * (`featureSet`, `requiredFeatures`, or both) matches an array that reports every one of them
 * enabled or active, whatever its softwareVersion: OpenZFS pools have feature flags, not a
 * version, and one OpenZFS release makes pools of many feature sets. Its softwareVersions then
 * only say what the run was made on. A row without features (a legacy zpool "pool version
 * 23", an array's firmware) matches when softwareVersions lists the array's softwareVersion.
 */
export interface CompatEntry {
  adapter: string;
  adapterVersion: string;
  vendor: string;
  arrayModel: string;
  softwareVersions: string[];
  /** An OpenZFS feature set by name (src/adapters/openzfs-feature-sets.ts), e.g. "openzfs-2.2". */
  featureSet?: string;
  /** Features the array must have enabled or active, besides those of featureSet. */
  requiredFeatures?: string[];
  protocol: number;
  mamoriVersions: string[];
  conformance: { result: 'pass' | 'fail'; date: string; passed: number; failed: number };
  notes?: string;
}

export interface CompatGuide {
  format: 1;
  entries: CompatEntry[];
}

/** An array as the guide sees it: discoverArrays' model, softwareVersion and features. */
export interface CompatArray {
  model: string;
  softwareVersion: string;
  features?: readonly string[] | undefined;
}

/** What `compat check` says of one array. */
export interface CompatVerdict {
  supported: boolean;
  reason: string;
}

const bad = (file: string, why: string): MamoriError =>
  new MamoriError('INVALID_INPUT', `the compatibility guide ${file} does not parse: ${why}`, { details: { file } });

export async function readCompatGuide(file = SHIPPED_GUIDE): Promise<CompatGuide> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new MamoriError('INVALID_INPUT', `cannot read the compatibility guide ${file}: ${(e as Error).message}`, {
      cause: e,
      details: { file },
    });
  }
  return parseCompatGuide(text, file);
}

/** Checks every field: a guide that is wrong must be refused, not half believed. */
export function parseCompatGuide(text: string, file: string): CompatGuide {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw bad(file, (e as Error).message);
  }
  const g = raw as { format?: unknown; entries?: unknown };
  if (typeof g !== 'object' || g === null || g.format !== 1 || !Array.isArray(g.entries))
    throw bad(file, 'it must be {"format":1,"entries":[...]}');
  const strs = (v: unknown): boolean =>
    Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x !== '');
  g.entries.forEach((e: unknown, i: number) => {
    const x = e as Partial<CompatEntry>;
    const where = `entry ${i + 1}`;
    for (const k of ['adapter', 'adapterVersion', 'vendor', 'arrayModel'] as const) {
      if (typeof x?.[k] !== 'string' || x[k] === '') throw bad(file, `${where} has no ${k}`);
    }
    if (!strs(x.softwareVersions) || !strs(x.mamoriVersions))
      throw bad(file, `${where} must list softwareVersions and mamoriVersions`);
    if (
      x.featureSet !== undefined &&
      (typeof x.featureSet !== 'string' || featureSetFeatures(x.featureSet) === undefined)
    ) {
      throw bad(
        file,
        `${where} names feature set ${JSON.stringify(x.featureSet)}; known sets: ${Object.keys(OPENZFS_FEATURE_SETS).join(', ')}`,
      );
    }
    if (x.requiredFeatures !== undefined && !strs(x.requiredFeatures))
      throw bad(file, `${where}: requiredFeatures must be a non-empty list of feature names`);
    if (x.protocol !== 1) throw bad(file, `${where} names protocol ${String(x.protocol)}; this mamori speaks 1`);
    const c = x.conformance;
    if (
      !c ||
      !['pass', 'fail'].includes(c.result) ||
      typeof c.date !== 'string' ||
      !Number.isInteger(c.passed) ||
      !Number.isInteger(c.failed)
    )
      throw bad(file, `${where} has no conformance result {result, date, passed, failed}`);
  });
  return raw as CompatGuide;
}

export function searchCompat(guide: CompatGuide, q: { adapter?: string; array?: string }): CompatEntry[] {
  const like = (v: string, want: string | undefined): boolean =>
    want === undefined || v.toLowerCase().includes(want.toLowerCase());
  return guide.entries.filter((e) => like(e.adapter, q.adapter) && like(e.arrayModel, q.array));
}

/** Every feature a row requires (its set's and its own), or null for a row matched by softwareVersions. */
export function requiredFeaturesOf(e: CompatEntry): string[] | null {
  if (e.featureSet === undefined && e.requiredFeatures === undefined) return null;
  return [
    ...new Set([
      ...(e.featureSet !== undefined ? (featureSetFeatures(e.featureSet) ?? []) : []),
      ...(e.requiredFeatures ?? []),
    ]),
  ].sort();
}

/** What a row was tested on, in a few words: its feature set or feature count, else its software versions. */
export function describeSoftware(e: CompatEntry): string {
  const extra = e.requiredFeatures?.length ?? 0;
  if (e.featureSet !== undefined) return `feature set ${e.featureSet}${extra ? ` + ${extra} features` : ''}`;
  if (extra) return `${extra} required features`;
  return e.softwareVersions.join(', ');
}

function missingFeatures(e: CompatEntry, array: CompatArray): string[] {
  const has = new Set(array.features ?? []);
  return (requiredFeaturesOf(e) ?? []).filter((f) => !has.has(f));
}

function matchesSoftware(e: CompatEntry, array: CompatArray): boolean {
  return requiredFeaturesOf(e) === null
    ? e.softwareVersions.includes(array.softwareVersion)
    : missingFeatures(e, array).length === 0;
}

/** Why no row of this model fits the array's software: the closest feature row's missing features, or the versions tested. */
function softwareReason(rows: CompatEntry[], array: CompatArray): string {
  const featureRows = rows.filter((e) => requiredFeaturesOf(e) !== null);
  const tested = [...new Set(rows.map(describeSoftware))].join('; ');
  if (featureRows.length > 0 && (array.features?.length ?? 0) > 0) {
    const closest = featureRows
      .map((e) => ({ e, missing: missingFeatures(e, array) }))
      .sort((a, b) => a.missing.length - b.missing.length)[0]!;
    return `${array.model} (${array.softwareVersion}) lacks feature${closest.missing.length > 1 ? 's' : ''} ${closest.missing.join(', ')} of the tested ${describeSoftware(closest.e)}; tested: ${tested}`;
  }
  const features = array.features?.length ? ` with ${array.features.length} features` : '';
  return `${array.model} software ${array.softwareVersion}${features} is not listed; tested: ${tested}`;
}

/**
 * Is this adapter with this array supported, and if not, why: the first thing that differs
 * from a tested row, so the person knows what to change (firmware, adapter, mamori).
 */
export function checkCompat(
  guide: CompatGuide,
  adapter: { name: string; version: string },
  array: CompatArray,
  mamoriVersion = MAMORI_VERSION,
): CompatVerdict {
  const rows = guide.entries.filter((e) => e.adapter === adapter.name && e.arrayModel === array.model);
  if (rows.length === 0) {
    const models = guide.entries.filter((e) => e.adapter === adapter.name).map((e) => e.arrayModel);
    return {
      supported: false,
      reason: `${array.model} with the ${adapter.name} adapter is not in the compatibility guide${models.length ? ` (it lists ${[...new Set(models)].join(', ')})` : ''}`,
    };
  }
  const withSoftware = rows.filter((e) => matchesSoftware(e, array));
  if (withSoftware.length === 0) return { supported: false, reason: softwareReason(rows, array) };
  const withAdapter = withSoftware.filter((e) => e.adapterVersion === adapter.version);
  if (withAdapter.length === 0)
    return {
      supported: false,
      reason: `adapter ${adapter.name} ${adapter.version} is not listed for it; tested: ${withSoftware.map((e) => e.adapterVersion).join(', ')}`,
    };
  const withMamori = withAdapter.filter((e) => e.mamoriVersions.includes(mamoriVersion));
  if (withMamori.length === 0)
    return {
      supported: false,
      reason: `tested with mamori ${withAdapter.flatMap((e) => e.mamoriVersions).join(', ')}, not ${mamoriVersion}`,
    };
  const passed = withMamori.find((e) => e.conformance.result === 'pass');
  if (!passed) return { supported: false, reason: `its conformance run of ${withMamori[0]!.conformance.date} failed` };
  return {
    supported: true,
    reason: `conformance passed on ${passed.conformance.date} (${passed.conformance.passed} steps)`,
  };
}

/**
 * How a run records the array's features: the set's name when they are exactly an OpenZFS
 * set (a pool made with compatibility=NAME), else every feature the tested pool had. Never
 * fewer than it had: a row claims only what a run showed.
 */
export function featuresForRow(
  features: readonly string[] | undefined,
): Pick<CompatEntry, 'featureSet' | 'requiredFeatures'> {
  if (!features || features.length === 0) return {};
  const set = featureSetNamed(features);
  return set !== undefined ? { featureSet: set } : { requiredFeatures: [...new Set(features)].sort() };
}

/** The guide with `entry` in place of the row for the same adapter, version, model and software (features included). */
export function recordCompat(guide: CompatGuide, entry: CompatEntry): CompatGuide {
  const same = (e: CompatEntry): boolean =>
    e.adapter === entry.adapter &&
    e.adapterVersion === entry.adapterVersion &&
    e.arrayModel === entry.arrayModel &&
    e.softwareVersions.join() === entry.softwareVersions.join() &&
    e.featureSet === entry.featureSet &&
    (e.requiredFeatures ?? []).join() === (entry.requiredFeatures ?? []).join();
  return { format: 1, entries: [...guide.entries.filter((e) => !same(e)), entry] };
}
