// The alerts page: an inbox of the tenant's alerts, filtered by status,
// kept current by the live stream (and a periodic read, in case the
// stream missed something), where an operator acknowledges and clears
// them.
import { useCallback, useEffect, useRef, useState } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { api, openStream, roleAtLeast, type StreamMessage } from '../api';
import { useRole } from '../session';
import { Badge, Button, ErrorBanner, Field, Spinner, StatusBadge, Table, formatAgo, formatNumber, formatTime, type Column, type Tone } from '../ui';

/** An alert as the API answers it. */
export interface Alert {
  id: string;
  rule_id: string;
  device_id: string;
  type: string;
  severity: string;
  status: string;
  message?: string;
  values?: Record<string, unknown>;
  count: number;
  raised_at: string;
  last_seen_at: string;
  acknowledged_at?: string;
  acknowledged_by?: string;
  cleared_at?: string;
  cleared_by?: string;
}

/** The status filters, as the API's status parameter takes them. */
const filters = [
  { value: 'open', label: 'Open (active and acknowledged)' },
  { value: 'active', label: 'Active' },
  { value: 'acknowledged', label: 'Acknowledged' },
  { value: 'cleared', label: 'Cleared' },
  { value: 'all', label: 'All' },
];

/** How often the list is read again besides the stream. */
export const REFRESH_MS = 10_000;

const pageSize = 100;

/** Reports whether an alert belongs in the list of a status filter. */
export function matchesFilter(a: Alert, filter: string): boolean {
  switch (filter) {
    case 'all':
      return true;
    case 'open':
      return a.status !== 'cleared';
    default:
      return a.status === filter;
  }
}

const severityTones: Record<string, Tone> = { critical: 'bad', warning: 'warn', info: 'info' };

function SeverityBadge({ severity }: { severity: string }) {
  return <Badge tone={severityTones[severity] ?? 'muted'}>{severity || 'unknown'}</Badge>;
}

/** Hides text from the eye but not from screen readers. */
const srOnly = {
  position: 'absolute',
  width: '1px',
  height: '1px',
  overflow: 'hidden',
  clipPath: 'inset(50%)',
  whiteSpace: 'nowrap',
  margin: 0,
} as const;

/** Orders alerts newest first, as the inbox shows them. */
const byRaised = (a: Alert, b: Alert) => (b.raised_at ?? '').localeCompare(a.raised_at ?? '') || b.id.localeCompare(a.id);

export function AlertsPage() {
  const role = useRole();
  const canAct = roleAtLeast(role, 'operator');
  const [params, setParams] = useSearchParams();
  const filter = filters.some((f) => f.value === params.get('status')) ? (params.get('status') as string) : 'open';
  const [alerts, setAlerts] = useState<Alert[] | null>(null);
  const [nextAfter, setNextAfter] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState('');
  const [announce, setAnnounce] = useState('');
  const [connected, setConnected] = useState(false);
  const [loadingMore, setLoadingMore] = useState(false);
  // Alerts this page changed: they stay in the list, with their new
  // status, until the next read, even if they no longer match the filter,
  // so the row does not vanish under the pointer.
  const acted = useRef(new Set<string>());
  const shown = useRef(pageSize);
  const filterRef = useRef(filter);
  filterRef.current = filter;

  const query = useCallback(
    (after = '', limit = pageSize) => {
      const q = new URLSearchParams({ limit: String(limit) });
      if (filter !== 'all') q.set('status', filter);
      if (after) q.set('after', after);
      return `/api/v1/alerts?${q}`;
    },
    [filter],
  );

  const load = useCallback(async () => {
    try {
      const limit = Math.min(1000, Math.max(pageSize, shown.current));
      const r = await api<{ alerts: Alert[] | null; next_after?: string }>(query('', limit));
      acted.current.clear();
      setAlerts(r.alerts ?? []);
      setNextAfter(r.next_after ?? '');
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [query]);

  useEffect(() => {
    setAlerts(null);
    shown.current = pageSize;
    void load();
    const t = setInterval(() => void load(), REFRESH_MS);
    return () => clearInterval(t);
  }, [load]);

  const upsert = useCallback((a: Alert, keep: boolean) => {
    setAlerts((list) => {
      if (!list) return list;
      const i = list.findIndex((x) => x.id === a.id);
      const fits = keep || matchesFilter(a, filterRef.current) || acted.current.has(a.id);
      if (!fits) return i < 0 ? list : list.filter((x) => x.id !== a.id);
      if (i < 0) return [a, ...list].sort(byRaised);
      const next = list.slice();
      next[i] = a;
      return next;
    });
  }, []);

  const loadRef = useRef(load);
  loadRef.current = load;

  // Live changes: an alert event carries the alert as stored. The
  // stream stays open across filter changes.
  useEffect(() => {
    let everConnected = false;
    return openStream({ kinds: ['alert'] }, (m: StreamMessage) => {
      if (m.type === 'status') {
        setConnected(m.connected);
        // Events may have been missed while the stream was down.
        if (m.connected && everConnected) void loadRef.current();
        everConnected ||= m.connected;
      } else if (m.type === 'lagging') {
        void loadRef.current();
      } else if (m.type === 'event' && m.kind === 'alert') {
        const a = m.data as Alert | undefined;
        if (a && typeof a.id === 'string' && typeof a.status === 'string') upsert(a, false);
      }
    });
  }, [upsert]);

  const act = async (a: Alert, action: 'acknowledge' | 'clear') => {
    setBusy(`${a.id}/${action}`);
    try {
      const updated = await api<Alert>(`/api/v1/alerts/${encodeURIComponent(a.id)}/${action}`, { method: 'POST' });
      acted.current.add(updated.id);
      upsert(updated, true);
      setAnnounce(`Alert ${a.type} on ${a.device_id} ${action === 'clear' ? 'cleared' : 'acknowledged'}.`);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy('');
    }
  };

  const loadMore = async () => {
    if (!nextAfter) return;
    setLoadingMore(true);
    try {
      const r = await api<{ alerts: Alert[] | null; next_after?: string }>(query(nextAfter));
      setAlerts((list) => {
        const have = new Set((list ?? []).map((x) => x.id));
        const merged = [...(list ?? []), ...(r.alerts ?? []).filter((x) => !have.has(x.id))];
        shown.current = merged.length;
        return merged;
      });
      setNextAfter(r.next_after ?? '');
    } catch (e) {
      setError(e);
    } finally {
      setLoadingMore(false);
    }
  };

  const columns: Column<Alert>[] = [
    { key: 'severity', header: 'Severity', render: (a) => <SeverityBadge severity={a.severity} /> },
    {
      key: 'alert',
      header: 'Alert',
      render: (a) => (
        <div>
          <strong>{a.type}</strong>
          {a.message ? <div>{a.message}</div> : null}
          {a.values && Object.keys(a.values).length ? (
            <small className="muted">
              {Object.entries(a.values)
                .map(([k, v]) => `${k}: ${formatNumber(v)}`)
                .join(', ')}
            </small>
          ) : null}
        </div>
      ),
    },
    {
      key: 'device',
      header: 'Device',
      render: (a) => (a.device_id ? <Link to={`/devices/${encodeURIComponent(a.device_id)}`}>{a.device_id}</Link> : '—'),
    },
    {
      key: 'status',
      header: 'Status',
      render: (a) => (
        <span data-testid="alert-status" data-status={a.status} title={statusTitle(a)}>
          <StatusBadge status={a.status} />
        </span>
      ),
    },
    { key: 'count', header: 'Count', render: (a) => formatNumber(a.count) },
    {
      key: 'raised',
      header: 'Raised',
      render: (a) => <time dateTime={a.raised_at}>{formatTime(a.raised_at)}</time>,
    },
    {
      key: 'seen',
      header: 'Last seen',
      render: (a) => (
        <time dateTime={a.last_seen_at} title={formatTime(a.last_seen_at)}>
          {formatAgo(a.last_seen_at)}
        </time>
      ),
    },
    {
      key: 'rule',
      header: 'Rule',
      render: (a) => (a.rule_id ? <Link to={`/rules/${encodeURIComponent(a.rule_id)}`}>rule</Link> : '—'),
    },
    {
      key: 'actions',
      header: 'Actions',
      render: (a) =>
        canAct && a.status !== 'cleared' ? (
          <span style={{ display: 'flex', flexWrap: 'wrap', gap: '0.25rem' }}>
            {a.status === 'active' ? (
              <Button
                data-testid="alert-ack"
                onClick={() => void act(a, 'acknowledge')}
                busy={busy === `${a.id}/acknowledge`}
                disabled={busy !== ''}
                aria-label={`Acknowledge ${a.type} on ${a.device_id}`}
              >
                Acknowledge
              </Button>
            ) : null}
            <Button
              data-testid="alert-clear"
              onClick={() => void act(a, 'clear')}
              busy={busy === `${a.id}/clear`}
              disabled={busy !== ''}
              aria-label={`Clear ${a.type} on ${a.device_id}`}
            >
              Clear
            </Button>
          </span>
        ) : null,
    },
  ];

  return (
    <>
      <div style={{ display: 'flex', flexWrap: 'wrap', gap: '0.5rem', justifyContent: 'space-between', alignItems: 'baseline' }}>
        <h1>Alerts</h1>
        <span className="muted" aria-live="polite">
          {connected ? 'Live' : 'Refreshing every 10 s'}
        </span>
      </div>
      <div style={{ display: 'flex', flexWrap: 'wrap', gap: '0.5rem', alignItems: 'center', marginBottom: '0.75rem' }}>
        <Field label="Status" className="inline">
          {(id) => (
            <select
              id={id}
              data-testid="alert-filter"
              value={filter}
              onChange={(e) => {
                const next = new URLSearchParams(params);
                if (e.target.value === 'open') next.delete('status');
                else next.set('status', e.target.value);
                setParams(next, { replace: true });
              }}
            >
              {filters.map((f) => (
                <option key={f.value} value={f.value}>
                  {f.label}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Button onClick={() => void load()}>Refresh</Button>
      </div>
      {!canAct && role ? <p className="muted">Acknowledging and clearing alerts needs the operator role.</p> : null}
      <ErrorBanner error={error} onDismiss={() => setError(null)} />
      <p role="status" aria-live="polite" style={srOnly}>
        {announce}
      </p>
      {alerts === null && !error ? (
        <Spinner label="Loading alerts…" />
      ) : (
        <Table
          caption="Alerts"
          columns={columns}
          rows={alerts ?? []}
          rowKey={(a) => a.id}
          empty={filter === 'open' ? 'No open alerts. All quiet.' : 'No alerts.'}
          rowProps={(a) => ({ 'data-testid': 'alert-row', 'data-alert-id': a.id, 'data-severity': a.severity })}
        />
      )}
      {nextAfter ? (
        <div style={{ marginTop: '0.75rem' }}>
          <Button onClick={() => void loadMore()} busy={loadingMore}>
            Load more
          </Button>
        </div>
      ) : null}
    </>
  );
}

function statusTitle(a: Alert): string | undefined {
  if (a.status === 'acknowledged' && a.acknowledged_at) {
    return `acknowledged ${formatTime(a.acknowledged_at)}${a.acknowledged_by ? ` by ${a.acknowledged_by}` : ''}`;
  }
  if (a.status === 'cleared' && a.cleared_at) {
    return `cleared ${formatTime(a.cleared_at)}${a.cleared_by ? ` by ${a.cleared_by}` : ''}`;
  }
  return undefined;
}
