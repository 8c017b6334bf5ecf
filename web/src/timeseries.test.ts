import { describe, expect, it } from 'vitest';
import { Rolling, alignSeries, chooseBucket, maxPoints, ranges } from './timeseries';

describe('chooseBucket', () => {
  it.each([
    ['1h', '10s', 360],
    ['6h', '1m', 360],
    ['24h', '5m', 288],
    ['7d', '1h', 168],
    ['30d', '3h', 240],
  ])('gives the %s range %s buckets (%i points)', (id, bucket, points) => {
    const r = ranges.find((x) => x.id === id)!;
    const b = chooseBucket(r.ms);
    expect(b?.name).toBe(bucket);
    expect(r.ms / b!.ms).toBe(points);
  });

  it('keeps every offered range at or under the point budget', () => {
    for (const r of ranges) {
      const b = chooseBucket(r.ms);
      expect(r.ms / (b?.ms ?? 1000)).toBeLessThanOrEqual(maxPoints);
    }
  });

  it('asks for raw points when one a second fits the budget', () => {
    expect(chooseBucket(5 * 60_000)).toBeNull();
    expect(chooseBucket(maxPoints * 1000)).toBeNull();
    expect(chooseBucket(maxPoints * 1000 + 1)?.name).toBe('10s');
  });

  it('caps very long ranges at one-day buckets', () => {
    expect(chooseBucket(10 * 365 * 86_400_000)?.name).toBe('1d');
  });
});

describe('alignSeries', () => {
  it('lines series up on the union of their times with nulls for gaps', () => {
    const { keys, data } = alignSeries([
      { key: 'a', samples: [{ ts: '2024-01-01T00:00:00Z', value: 1 }, { ts: '2024-01-01T00:00:10Z', value: 2 }] },
      { key: 'b', samples: [{ ts: '2024-01-01T00:00:10Z', value: true }, { ts: '2024-01-01T00:00:20Z', value: 3 }] },
      { key: 's', samples: [{ ts: '2024-01-01T00:00:10Z', value: 'text' }] },
    ]);
    const t0 = Date.parse('2024-01-01T00:00:00Z') / 1000;
    expect(keys).toEqual(['a', 'b']);
    expect(data).toEqual([
      [t0, t0 + 10, t0 + 20],
      [1, 2, null],
      [null, 1, 3],
    ]);
  });
});

describe('Rolling', () => {
  it('keeps points inside the window, in time order, numeric only', () => {
    const r = new Rolling(60_000);
    r.add('t', 1000, 1);
    r.add('t', 3000, 3);
    r.add('t', 2000, 2);
    r.add('t', 2500, 'x');
    r.add('u', 500, 9);
    r.trim(61_500);
    const { keys, data } = r.aligned();
    expect(keys).toEqual(['t']);
    expect(data).toEqual([[2, 3], [2, 3]]);
  });

  it('bounds the points it keeps per key', () => {
    const r = new Rolling(1e12, 10);
    for (let i = 0; i < 25; i++) r.add('k', i * 1000, i);
    expect(r.aligned().data[1]).toEqual([15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
  });
});
