// Pure helpers for charts: choosing a bucket width for a range and lining
// series up on one time axis, as uPlot wants them.
import type { Series } from './types';

/** A history range the picker offers. */
export interface Range {
  id: string;
  label: string;
  ms: number;
}

const minute = 60_000;
const hour = 60 * minute;
const day = 24 * hour;

export const ranges: Range[] = [
  { id: '1h', label: 'Last hour', ms: hour },
  { id: '6h', label: 'Last 6 hours', ms: 6 * hour },
  { id: '24h', label: 'Last 24 hours', ms: day },
  { id: '7d', label: 'Last 7 days', ms: 7 * day },
  { id: '30d', label: 'Last 30 days', ms: 30 * day },
];

/** The bucket widths offered to the API, as Go durations, smallest first. */
const buckets: { name: string; ms: number }[] = [
  { name: '1s', ms: 1000 },
  { name: '10s', ms: 10_000 },
  { name: '1m', ms: minute },
  { name: '5m', ms: 5 * minute },
  { name: '15m', ms: 15 * minute },
  { name: '1h', ms: hour },
  { name: '3h', ms: 3 * hour },
  { name: '6h', ms: 6 * hour },
  { name: '1d', ms: day },
];

/** Points a chart should get at most. */
export const maxPoints = 500;

/**
 * Chooses the bucket for a range so that the chart gets at most about
 * maxPoints points per key: the smallest offered width of at least
 * range/maxPoints. null means raw points (a range short enough that even
 * one point a second stays under the limit).
 */
export function chooseBucket(rangeMs: number, points = maxPoints): { name: string; ms: number } | null {
  const want = rangeMs / points;
  if (want <= 1000 && rangeMs <= points * 1000) return null;
  for (const b of buckets) {
    if (b.ms >= want) return b;
  }
  return buckets[buckets.length - 1];
}

/** uPlot's data: x in Unix seconds, then one array of values per series. */
export type Aligned = [number[], ...(number | null)[][]];

/** A value as a chart number, or null when it is not one (strings). */
export function numeric(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  return null;
}

/**
 * Lines series up on the union of their timestamps; a series with no
 * value at a time has null there. Series with no numeric value at all are
 * left out; keys names those kept, in order.
 */
export function alignSeries(series: Series[]): { keys: string[]; data: Aligned } {
  const kept = series.filter((s) => s.samples.some((p) => numeric(p.value) !== null));
  const times = new Set<number>();
  const maps = kept.map((s) => {
    const m = new Map<number, number | null>();
    for (const p of s.samples) {
      const t = Date.parse(p.ts) / 1000;
      if (Number.isNaN(t)) continue;
      times.add(t);
      m.set(t, numeric(p.value));
    }
    return m;
  });
  const xs = [...times].sort((a, b) => a - b);
  const data: Aligned = [xs, ...maps.map((m) => xs.map((t) => m.get(t) ?? null))];
  return { keys: kept.map((s) => s.key), data };
}

/** Live points per key, newest last, within a rolling window. */
export class Rolling {
  private readonly series = new Map<string, { t: number; v: number }[]>();
  constructor(
    readonly windowMs: number,
    readonly maxPerKey = 3000,
  ) {}

  /** Adds a point; a non-numeric value is ignored. t is epoch ms. */
  add(key: string, t: number, value: unknown): void {
    const v = numeric(value);
    if (v === null || Number.isNaN(t)) return;
    let s = this.series.get(key);
    if (!s) {
      s = [];
      this.series.set(key, s);
    }
    // Points mostly arrive in order; an older one is put in its place.
    if (s.length === 0 || s[s.length - 1].t <= t) {
      s.push({ t, v });
    } else {
      let i = s.length - 1;
      while (i > 0 && s[i - 1].t > t) i--;
      s.splice(i, 0, { t, v });
    }
    if (s.length > this.maxPerKey) s.splice(0, s.length - this.maxPerKey);
  }

  /** Drops points older than the window before now (epoch ms). */
  trim(now: number): void {
    const from = now - this.windowMs;
    for (const [k, s] of this.series) {
      let i = 0;
      while (i < s.length && s[i].t < from) i++;
      if (i > 0) s.splice(0, i);
      if (s.length === 0) this.series.delete(k);
    }
  }

  keys(): string[] {
    return [...this.series.keys()].sort();
  }

  /** The window as aligned chart data. */
  aligned(): { keys: string[]; data: Aligned } {
    const keys = this.keys();
    return alignSeries(
      keys.map((k) => ({
        key: k,
        samples: (this.series.get(k) ?? []).map((p) => ({ ts: new Date(p.t).toISOString(), value: p.v })),
      })),
    );
  }
}
