import { createRequire } from 'node:module';

/** A metric family as parse-prometheus-text-format returns it (values stay strings). */
export interface MetricFamily {
  name: string;
  help: string;
  type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
  metrics: {
    value?: string;
    labels?: Record<string, string>;
    buckets?: Record<string, string>;
    count?: string;
    sum?: string;
  }[];
}

export interface HistogramSeries {
  labels: Record<string, string>;
  count: number;
  sum: number;
  /** Cumulative counts by upper bound (le), '+Inf' included. */
  buckets: Record<string, number>;
}

// The package ships CommonJS without type declarations.
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => MetricFamily[];

/** Every family of an exposition text by name; throws if any line does not parse or a family comes twice. */
export function parseMetrics(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  for (const f of parse(text)) {
    if (families.has(f.name)) throw new Error(`metric family ${f.name} appears twice in the exposition text`);
    families.set(f.name, f);
  }
  return families;
}

/** The value of the series of `name` with exactly these labels, or undefined when absent. */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  const m = families.get(name)?.metrics.find((s) => sameLabels(s.labels ?? {}, labels));
  return m?.value === undefined ? undefined : Number(m.value);
}

/**
 * The series of a labelled histogram. The parser folds a histogram's samples into one
 * unlabelled entry (it follows prom2json's shape for single-series histograms), so the
 * text is parsed again with that family's TYPE taken as untyped: its _bucket, _sum and
 * _count lines then come back as families of their own, labels intact.
 */
export function histogramSeries(text: string, name: string): HistogramSeries[] {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // A list, not a map: each series' _bucket, _sum and _count lines come back as families of
  // their own, so the same name recurs once per series.
  const untyped = parse(text.replace(new RegExp(`^# TYPE ${escaped} histogram$`, 'm'), `# TYPE ${name} untyped`));
  const samples = (suffix: string): MetricFamily['metrics'] =>
    untyped.filter((f) => f.name === `${name}${suffix}`).flatMap((f) => f.metrics);
  const series = new Map<string, HistogramSeries>();
  const entry = (labels: Record<string, string>): HistogramSeries => {
    const key = JSON.stringify(Object.entries(labels).sort());
    let s = series.get(key);
    if (!s) series.set(key, (s = { labels, count: 0, sum: 0, buckets: {} }));
    return s;
  };
  for (const m of samples('_count')) entry(m.labels ?? {}).count = Number(m.value);
  for (const m of samples('_sum')) entry(m.labels ?? {}).sum = Number(m.value);
  for (const m of samples('_bucket')) {
    const { le, ...labels } = m.labels ?? {};
    if (le !== undefined) entry(labels).buckets[le] = Number(m.value);
  }
  return [...series.values()];
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}
