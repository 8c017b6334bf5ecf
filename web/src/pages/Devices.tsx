// The device list: search, label selector, status and profile filters,
// and cursor paging, 50 devices a page, so it stays fast with 100,000.
import { useEffect, useMemo, useRef, useState, type FormEvent } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { api, openStream } from '../api';
import type { Device, DeviceList, Presence, ProfileList } from '../types';
import { Badge, Button, ErrorBanner, Field, Spinner, StatusBadge, Table, formatAgo, type Column } from '../ui';

export const pageSize = 50;

/** Builds the listing's query from the filters and a cursor. */
export function devicesQuery(f: { q?: string; labels?: string; status?: string; profile?: string }, cursor?: string): string {
  const p = new URLSearchParams();
  if (f.q?.trim()) p.set('q', f.q.trim());
  if (f.labels?.trim()) p.set('labels', f.labels.replace(/\s+/g, ''));
  if (f.status) p.set('status', f.status);
  if (f.profile) p.set('profile', f.profile);
  if (cursor) p.set('cursor', cursor);
  p.set('limit', String(pageSize));
  return `/api/v1/devices?${p.toString()}`;
}

export function DevicesPage() {
  const [params, setParams] = useSearchParams();
  const filters = useMemo(
    () => ({
      q: params.get('q') ?? '',
      labels: params.get('labels') ?? '',
      status: params.get('status') ?? '',
      profile: params.get('profile') ?? '',
    }),
    [params],
  );
  // The search box and label input apply after a pause in typing.
  const [q, setQ] = useState(filters.q);
  const [labels, setLabels] = useState(filters.labels);
  // cursors[i] is the cursor that lists page i+2; the first page has
  // none. A change of filters starts again from the first page.
  const [paging, setPaging] = useState<{ key: string; cursors: string[] }>({ key: '', cursors: [] });
  const [page, setPage] = useState<DeviceList | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [profiles, setProfiles] = useState<string[]>([]);
  const filterKey = `${filters.q}\u0000${filters.labels}\u0000${filters.status}\u0000${filters.profile}`;

  const update = (name: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value);
    else next.delete(name);
    setParams(next, { replace: true });
  };

  useEffect(() => {
    const t = setTimeout(() => {
      if (q !== filters.q) update('q', q);
    }, 300);
    return () => clearTimeout(t);
  }, [q]);

  const cursors = paging.key === filterKey ? paging.cursors : [];
  const setCursors = (f: (c: string[]) => string[]) => setPaging({ key: filterKey, cursors: f(cursors) });

  const cursor = cursors.length ? cursors[cursors.length - 1] : undefined;
  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    api<DeviceList>(devicesQuery(filters, cursor), { signal: ctl.signal })
      .then((p) => {
        setPage(p);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!ctl.signal.aborted) setError(e);
      })
      .finally(() => {
        if (!ctl.signal.aborted) setLoading(false);
      });
    return () => ctl.abort();
    // filters is derived from filterKey.
  }, [filterKey, cursor]);

  useEffect(() => {
    api<ProfileList>('/api/v1/profiles')
      .then((l) => setProfiles(l.profiles.map((p) => p.id)))
      .catch(() => setProfiles([]));
  }, []);

  const devices = page?.devices ?? [];
  const presence = usePresences(devices);

  const columns: Column<Device>[] = [
    {
      key: 'id',
      header: 'Device',
      render: (d) => (
        <>
          <Link to={`/devices/${encodeURIComponent(d.id)}`}>{d.id}</Link>
          {d.name && d.name !== d.id ? <div className="muted small">{d.name}</div> : null}
        </>
      ),
    },
    {
      key: 'status',
      header: 'Status',
      render: (d) => <StatusBadge status={d.status ?? d.presence?.status ?? presence[d.id]?.status ?? (filters.status || undefined)} />,
    },
    { key: 'profile', header: 'Profile', render: (d) => d.profile || <span className="muted">none</span> },
    {
      key: 'labels',
      header: 'Labels',
      render: (d) => (
        <span className="labels">
          {Object.entries(d.labels ?? {}).map(([k, v]) => (
            <Badge key={k} tone="info">
              {k}={v}
            </Badge>
          ))}
        </span>
      ),
    },
    { key: 'seen', header: 'Last seen', render: (d) => <span title={d.last_seen_at ?? ''}>{d.last_seen_at ? formatAgo(d.last_seen_at) : 'never'}</span> },
  ];

  const applyLabels = (e: FormEvent) => {
    e.preventDefault();
    update('labels', labels.trim());
  };

  return (
    <>
      <h1>Devices</h1>
      <form className="filters" role="search" onSubmit={applyLabels}>
        <Field label="Search">
          {(id) => (
            <input
              id={id}
              type="search"
              placeholder="ID prefix or name"
              value={q}
              onChange={(e) => setQ(e.target.value)}
              data-testid="device-search"
            />
          )}
        </Field>
        <Field label="Labels" hint="key=value, comma separated; press Enter">
          {(id, desc) => (
            <input
              id={id}
              aria-describedby={desc}
              placeholder="site=berlin,kind=pump"
              value={labels}
              onChange={(e) => setLabels(e.target.value)}
              onBlur={() => labels.trim() !== filters.labels && update('labels', labels.trim())}
              data-testid="device-labels"
            />
          )}
        </Field>
        <Field label="Status">
          {(id) => (
            <select id={id} value={filters.status} onChange={(e) => update('status', e.target.value)} data-testid="device-status">
              <option value="">Any</option>
              <option value="online">Online</option>
              <option value="stale">Stale</option>
              <option value="offline">Offline</option>
            </select>
          )}
        </Field>
        <Field label="Profile">
          {(id) => (
            <select id={id} value={filters.profile} onChange={(e) => update('profile', e.target.value)} data-testid="device-profile">
              <option value="">Any</option>
              {filters.profile && !profiles.includes(filters.profile) ? <option value={filters.profile}>{filters.profile}</option> : null}
              {profiles.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          )}
        </Field>
        <button type="submit" hidden>
          Apply
        </button>
      </form>
      <ErrorBanner error={error} />
      <div className="list-status" aria-live="polite">
        {loading ? <Spinner label="Loading devices…" /> : <span className="muted">Page {cursors.length + 1} · {devices.length} devices shown</span>}
      </div>
      <Table
        caption="Devices"
        columns={columns}
        rows={devices}
        rowKey={(d) => d.id}
        rowProps={(d) => ({ 'data-testid': 'device-row', 'data-device-id': d.id })}
        empty={loading ? 'Loading…' : 'No devices match.'}
      />
      <nav className="pager" aria-label="Pages">
        <Button onClick={() => setCursors((c) => c.slice(0, -1))} disabled={cursors.length === 0 || loading} data-testid="page-prev">
          Previous
        </Button>
        <Button
          onClick={() => page?.next_cursor && setCursors((c) => [...c, page.next_cursor!])}
          disabled={!page?.next_cursor || loading}
          data-testid="page-next"
        >
          Next
        </Button>
      </nav>
    </>
  );
}

/**
 * The presence of each listed device that the listing does not carry: read
 * once per page (a few at a time), then kept current from the live stream.
 */
function usePresences(devices: Device[]): Record<string, Presence> {
  const [map, setMap] = useState<Record<string, Presence>>({});
  const need = devices.filter((d) => !d.status && !d.presence).map((d) => d.id);
  const key = need.join(',');
  const ids = useRef<string[]>([]);
  ids.current = need;

  useEffect(() => {
    if (!key) return;
    const list = key.split(',');
    let live = true;
    let next = 0;
    const worker = async () => {
      while (live && next < list.length) {
        const id = list[next++];
        try {
          const p = await api<Presence>(`/api/v1/devices/${encodeURIComponent(id)}/presence`);
          if (live) setMap((m) => ({ ...m, [id]: p }));
        } catch {
          // The badge shows unknown.
        }
      }
    };
    void Promise.all(Array.from({ length: Math.min(6, list.length) }, worker));
    const close = openStream({ kinds: ['presence'], devices: list }, (m) => {
      if (m.type === 'event' && m.kind === 'presence' && m.data) {
        setMap((prev) => ({ ...prev, [m.device]: m.data as Presence }));
      }
    });
    return () => {
      live = false;
      close();
    };
  }, [key]);
  return map;
}
