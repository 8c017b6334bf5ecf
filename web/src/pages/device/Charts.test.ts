import { describe, expect, it } from 'vitest';
import { historyQuery, liveRange } from './Charts';

describe('the live chart window', () => {
  it('is the five minutes up to the newest point', () => {
    expect(liveRange([[100, 400, 1000], [1, 2, 3]])).toEqual([700, 1000]);
  });
  it('starts at the first point while there is less than five minutes', () => {
    expect(liveRange([[900, 960, 1000], [1, 2, 3]])).toEqual([900, 1000]);
  });
  it('leaves the axis to the chart below two points', () => {
    expect(liveRange([[]])).toBeUndefined();
    expect(liveRange([[5], [1]])).toBeUndefined();
  });
});

describe('the history query', () => {
  it('asks for 30 days in 3 h averages', () => {
    const to = Date.UTC(2026, 10, 25);
    const q = new URL(historyQuery('d 1', 30 * 86400_000, to), 'http://x');
    expect(q.pathname).toBe('/api/v1/devices/d%201/telemetry');
    expect(q.searchParams.get('bucket')).toBe('3h');
    expect(q.searchParams.get('agg')).toBe('avg');
    expect(q.searchParams.get('from')).toBe(new Date(to - 30 * 86400_000).toISOString());
  });
});
