// The fleet overview: devices by status, messages per second and open
// alerts, refreshed every few seconds.
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { Link } from 'react-router-dom';
import { api, ApiError } from '../api';
import type { Alert, AlertList, Fleet, Stats } from '../types';
import { Badge, Card, ErrorBanner, Spinner, formatAgo } from '../ui';

/** How often the overview reads the counters. */
export const pollMs = 5000;
const sparkPoints = 60;

interface Counts {
  total?: number;
  online?: number;
  stale?: number;
  offline?: number;
  alerts?: number;
}

/** Messages per second between two reads of the received counter. */
export function rate(prev: { n: number; t: number } | null, next: { n: number; t: number }): number | null {
  if (!prev) return null;
  const dt = (next.t - prev.t) / 1000;
  if (dt <= 0 || next.n < prev.n) return null; // a restarted node resets its counters
  return (next.n - prev.n) / dt;
}

export function OverviewPage() {
  const [counts, setCounts] = useState<Counts>({});
  const [rates, setRates] = useState<number[]>([]);
  const [alerts, setAlerts] = useState<Alert[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loaded, setLoaded] = useState(false);
  const prev = useRef<{ n: number; t: number } | null>(null);
  const fleetMissing = useRef(false);
  const ticks = useRef(0);

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;

    const readCounts = async (): Promise<{ counts: Counts; n: number; t: number }> => {
      if (!fleetMissing.current) {
        try {
          const f = await api<Fleet>('/api/v1/fleet');
          return {
            counts: { ...f.devices, alerts: f.alerts.active + (f.alerts.acknowledged ?? 0) },
            n: f.messages.received,
            t: Date.parse(f.time) || Date.now(),
          };
        } catch (e) {
          if (!(e instanceof ApiError && (e.status === 404 || e.status === 503))) throw e;
          fleetMissing.current = true;
        }
      }
      // An older node without /fleet: message counters from /stats.
      const s = await api<Stats>('/api/v1/stats');
      return { counts: {}, n: s.ingest.accepted_messages, t: Date.now() };
    };

    const tick = async () => {
      try {
        const [c, a] = await Promise.all([
          readCounts(),
          api<AlertList>('/api/v1/alerts?status=open&limit=100').catch((e: unknown) => {
            if (e instanceof ApiError && e.status === 503) return { alerts: [] } as AlertList;
            throw e;
          }),
        ]);
        if (!live) return;
        const r = rate(prev.current, { n: c.n, t: c.t });
        prev.current = { n: c.n, t: c.t };
        const list = [...a.alerts].sort((x, y) => Date.parse(y.raised_at) - Date.parse(x.raised_at));
        setCounts({ ...c.counts, alerts: c.counts.alerts ?? list.length });
        setAlerts(list.slice(0, 5));
        if (r !== null) setRates((rs) => [...rs, r].slice(-sparkPoints));
        setError(null);
      } catch (e) {
        if (live) setError(e);
      } finally {
        if (live) {
          setLoaded(true);
          // The first rate needs a second read: take it soon.
          timer = setTimeout(tick, ticks.current++ === 0 ? 2000 : pollMs);
        }
      }
    };
    void tick();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, []);

  const current = rates.length ? rates[rates.length - 1] : null;

  return (
    <>
      <h1>Fleet overview</h1>
      <ErrorBanner error={error} />
      {!loaded ? <Spinner /> : null}
      <div className="stat-grid" aria-live="polite">
        <Stat label="Online" tone="ok" value={counts.online} testId="fleet-online" to="/devices?status=online" />
        <Stat label="Stale" tone="warn" value={counts.stale} testId="fleet-stale" to="/devices?status=stale" />
        <Stat label="Offline" tone="bad" value={counts.offline} testId="fleet-offline" to="/devices?status=offline" />
        <Stat
          label="Messages per second"
          value={current === null ? undefined : current}
          format={(v) => (v >= 100 ? Math.round(v).toLocaleString() : v.toFixed(1))}
          testId="fleet-rate"
          extra={<Sparkline values={rates} label="Messages per second, last five minutes" />}
        />
        <Stat label="Open alerts" tone={counts.alerts ? 'bad' : 'ok'} value={counts.alerts} testId="fleet-alerts" to="/alerts" />
      </div>
      {counts.total !== undefined ? (
        <p className="muted">
          {counts.total.toLocaleString()} devices in total. <Link to="/devices">All devices</Link>
        </p>
      ) : null}
      <Card title="Latest open alerts" actions={<Link to="/alerts">All alerts</Link>}>
        {alerts === null ? null : alerts.length === 0 ? (
          <p className="muted">No open alerts.</p>
        ) : (
          <ul className="alert-list">
            {alerts.map((a) => (
              <li key={a.id}>
                <Badge tone={a.severity === 'critical' ? 'bad' : a.severity === 'warning' ? 'warn' : 'info'}>{a.severity}</Badge>{' '}
                <strong>{a.type}</strong> on <Link to={`/devices/${encodeURIComponent(a.device_id)}`}>{a.device_id}</Link>
                {a.message ? <span className="muted"> — {a.message}</span> : null}
                <span className="muted small"> · {formatAgo(a.raised_at)}</span>
              </li>
            ))}
          </ul>
        )}
      </Card>
    </>
  );
}

function Stat({
  label,
  value,
  tone,
  testId,
  to,
  format = (v: number) => v.toLocaleString(),
  extra,
}: {
  label: string;
  value: number | undefined;
  tone?: 'ok' | 'warn' | 'bad';
  testId: string;
  to?: string;
  format?: (v: number) => string;
  extra?: ReactNode;
}) {
  const body = (
    <>
      <span className="stat-label">{label}</span>
      <span className={`stat-value${tone ? ` tone-${tone}` : ''}`} data-testid={testId}>
        {value === undefined ? '—' : format(value)}
      </span>
      {extra}
    </>
  );
  return to ? (
    <Link className="stat card" to={to}>
      {body}
    </Link>
  ) : (
    <div className="stat card">{body}</div>
  );
}

/** A tiny line of recent values, drawn as SVG. */
export function Sparkline({ values, label, width = 160, height = 36 }: { values: number[]; label: string; width?: number; height?: number }) {
  if (values.length < 2) return <svg className="sparkline" width={width} height={height} role="img" aria-label={`${label}: not enough data yet`} />;
  const max = Math.max(...values, 1e-9);
  const step = width / (values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(' ');
  return (
    <svg className="sparkline" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${label}: peak ${max.toFixed(1)}`}>
      <polyline points={pts} fill="none" stroke="currentColor" strokeWidth="1.5" />
    </svg>
  );
}
