// The live chart (a rolling five minutes from the stream) and the history
// chart with its range picker.
import { useCallback, useEffect, useState } from 'react';
import { api } from '../../api';
import { Chart } from '../../Chart';
import { alignSeries, chooseBucket, ranges, type Aligned } from '../../timeseries';
import type { TelemetryResult } from '../../types';
import { Button, Card, ErrorBanner, Field, Spinner } from '../../ui';
import { useDeviceLive } from './live';

export function LiveChart() {
  const { live, connected, dropped } = useDeviceLive();
  return (
    <Card
      title="Live, last 5 minutes"
      actions={
        <span className="muted small" aria-live="polite">
          {connected ? 'live' : 'connecting…'}
          {dropped ? ` · ${dropped} events dropped` : ''}
        </span>
      }
    >
      <Chart
        keys={live.keys}
        data={live.data}
        label="Live telemetry"
        testId="live-chart"
        empty="Waiting for numeric telemetry…"
        xRange={liveRange(live.data)}
      />
    </Card>
  );
}

/**
 * The live chart's window: the five minutes up to its newest point, or
 * from its first point while it has less than five minutes.
 */
export function liveRange(data: Aligned): [number, number] | undefined {
  const xs = data[0] as number[];
  if (xs.length < 2) return undefined;
  const last = xs[xs.length - 1];
  return [Math.max(xs[0], last - 300), last];
}

/** The query for a history range ending at to (epoch ms). */
export function historyQuery(device: string, rangeMs: number, to: number): string {
  const p = new URLSearchParams();
  p.set('from', new Date(to - rangeMs).toISOString());
  p.set('to', new Date(to).toISOString());
  const b = chooseBucket(rangeMs);
  if (b) {
    p.set('agg', 'avg');
    p.set('bucket', b.name);
  }
  p.set('limit', '1000');
  return `/api/v1/devices/${encodeURIComponent(device)}/telemetry?${p.toString()}`;
}

export function History({ device }: { device: string }) {
  const [range, setRange] = useState('1h');
  const [result, setResult] = useState<{ keys: string[]; data: Aligned; bucket?: string; xRange: [number, number] } | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);

  const load = useCallback(
    (signal: AbortSignal) => {
      const r = ranges.find((x) => x.id === range) ?? ranges[0];
      setLoading(true);
      const to = Date.now();
      api<TelemetryResult>(historyQuery(device, r.ms, to), { signal })
        .then((res) => {
          const a = alignSeries(res.series);
          setResult({ ...a, bucket: res.bucket, xRange: [(to - r.ms) / 1000, to / 1000] });
          setError(null);
        })
        .catch((e: unknown) => {
          if (!signal.aborted) setError(e);
        })
        .finally(() => {
          if (!signal.aborted) setLoading(false);
        });
    },
    [device, range],
  );

  useEffect(() => {
    const ctl = new AbortController();
    load(ctl.signal);
    return () => ctl.abort();
  }, [load, reload]);

  const b = chooseBucket((ranges.find((x) => x.id === range) ?? ranges[0]).ms);
  return (
    <Card
      title="History"
      actions={
        <div className="inline-form">
          <Field label="Range" className="inline">
            {(id) => (
              <select id={id} value={range} onChange={(e) => setRange(e.target.value)} data-testid="history-range">
                {ranges.map((r) => (
                  <option key={r.id} value={r.id}>
                    {r.label}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Button onClick={() => setReload((n) => n + 1)} aria-label="Reload history">
            Reload
          </Button>
        </div>
      }
    >
      <ErrorBanner error={error} />
      <p className="muted small" aria-live="polite">
        {loading ? <Spinner small label="Loading history…" /> : b ? `Averages over ${b.name} buckets` : 'Raw points'}
      </p>
      <Chart keys={result?.keys ?? []} data={result?.data ?? [[]]} label="Telemetry history" testId="history-chart" xRange={result?.xRange} />
    </Card>
  );
}
