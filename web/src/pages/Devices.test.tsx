import { act, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { Device } from '../types';
import { FakeWebSocket, json, on, routeFetch } from '../test/fakes';
import { renderPage } from '../test/render';
import { DevicesPage, devicesQuery, pageSize } from './Devices';

function device(id: string, extra: Partial<Device> = {}): Device {
  return {
    tenant_id: 'default',
    id,
    name: `Name of ${id}`,
    labels: { site: 'berlin' },
    metadata: {},
    profile: 'thermostat',
    created_at: '2024-01-01T00:00:00Z',
    updated_at: '2024-01-01T00:00:00Z',
    last_seen_at: null,
    refused_messages: 0,
    ...extra,
  };
}

/** A fleet of n devices paged by ID like the API does. */
function fleetRoutes(n: number) {
  const all = Array.from({ length: n }, (_, i) => device(`dev-${String(i).padStart(4, '0')}`));
  return routeFetch(
    on('GET', '/api/v1/devices', (url) => {
      const q = url.searchParams.get('q') ?? '';
      const after = url.searchParams.get('cursor') ?? '';
      const limit = Number(url.searchParams.get('limit'));
      const match = all.filter((d) => d.id.startsWith(q) && d.id > after);
      const page = match.slice(0, limit);
      return json({ devices: page, ...(match.length > limit ? { next_cursor: page[page.length - 1].id } : {}) });
    }),
    on('GET', '/api/v1/profiles', () => json({ profiles: [{ id: 'thermostat' }, { id: 'fridge' }] })),
    (url) => {
      const m = url.pathname.match(/^\/api\/v1\/devices\/([^/]+)\/presence$/);
      return m ? json({ device_id: m[1], status: 'online', reason: 'connected', since: '2024-01-01T00:00:00Z', seq: 1 }) : undefined;
    },
  );
}

const ids = () => screen.getAllByTestId('device-row').map((r) => r.getAttribute('data-device-id'));

describe('devicesQuery', () => {
  it('puts every filter and the cursor in the query', () => {
    expect(devicesQuery({ q: ' pu ', labels: 'site=a, kind=b', status: 'online', profile: 'p' }, 'c1')).toBe(
      `/api/v1/devices?q=pu&labels=site%3Da%2Ckind%3Db&status=online&profile=p&cursor=c1&limit=${pageSize}`,
    );
    expect(devicesQuery({})).toBe(`/api/v1/devices?limit=${pageSize}`);
  });
});

describe('DevicesPage', () => {
  it('lists a page of devices with links and status badges', async () => {
    fleetRoutes(3);
    renderPage(<DevicesPage />, { path: '/devices', route: '/devices' });
    await waitFor(() => expect(ids()).toEqual(['dev-0000', 'dev-0001', 'dev-0002']));
    const row = screen.getAllByTestId('device-row')[0];
    expect(within(row).getByRole('link', { name: 'dev-0000' })).toHaveAttribute('href', '/devices/dev-0000');
    expect(within(row).getByText('site=berlin')).toBeInTheDocument();
    // The listing has no presence: the page reads it and shows it.
    await waitFor(() => expect(within(row).getByText('online')).toBeInTheDocument());
    expect(screen.getByTestId('page-next')).toBeDisabled();
    expect(screen.getByTestId('page-prev')).toBeDisabled();
  });

  it('pages forward with the cursor and back with the remembered one', async () => {
    const f = fleetRoutes(120);
    const user = userEvent.setup();
    renderPage(<DevicesPage />, { path: '/devices', route: '/devices' });
    await waitFor(() => expect(ids()).toHaveLength(pageSize));
    expect(ids()[0]).toBe('dev-0000');

    await user.click(screen.getByTestId('page-next'));
    await waitFor(() => expect(ids()[0]).toBe('dev-0050'));
    await user.click(screen.getByTestId('page-next'));
    await waitFor(() => expect(ids()).toEqual(['dev-0100', ...Array.from({ length: 19 }, (_, i) => `dev-${String(101 + i).padStart(4, '0')}`)]));
    expect(screen.getByTestId('page-next')).toBeDisabled();
    expect(screen.getByText(/Page 3/)).toBeInTheDocument();

    await user.click(screen.getByTestId('page-prev'));
    await waitFor(() => expect(ids()[0]).toBe('dev-0050'));
    await user.click(screen.getByTestId('page-prev'));
    await waitFor(() => expect(ids()[0]).toBe('dev-0000'));
    expect(screen.getByTestId('page-prev')).toBeDisabled();

    const cursors = f.calls.filter((c) => c.url.pathname === '/api/v1/devices').map((c) => c.url.searchParams.get('cursor'));
    expect(cursors).toEqual([null, 'dev-0049', 'dev-0099', 'dev-0049', null]);
  });

  it('searches after a pause in typing and starts again at the first page', async () => {
    const f = fleetRoutes(120);
    const user = userEvent.setup();
    renderPage(<DevicesPage />, { path: '/devices', route: '/devices' });
    await waitFor(() => expect(ids()).toHaveLength(pageSize));
    await user.click(screen.getByTestId('page-next'));
    await waitFor(() => expect(ids()[0]).toBe('dev-0050'));

    await user.type(screen.getByTestId('device-search'), 'dev-011');
    await waitFor(() => expect(ids()).toEqual(Array.from({ length: 10 }, (_, i) => `dev-${String(110 + i).padStart(4, '0')}`)));
    const last = f.calls.filter((c) => c.url.pathname === '/api/v1/devices').at(-1)!;
    expect(last.url.searchParams.get('q')).toBe('dev-011');
    expect(last.url.searchParams.get('cursor')).toBeNull();
    expect(screen.getByText(/Page 1/)).toBeInTheDocument();
  });

  it('filters by status from the select and by labels on Enter', async () => {
    const f = fleetRoutes(2);
    const user = userEvent.setup();
    renderPage(<DevicesPage />, { path: '/devices', route: '/devices' });
    await waitFor(() => expect(ids()).toHaveLength(2));
    await user.selectOptions(screen.getByLabelText('Status'), 'offline');
    await waitFor(() => expect(f.calls.at(-1)?.url.searchParams.get('status')).toBe('offline'));
    await user.type(screen.getByLabelText('Labels'), 'site=berlin{Enter}');
    await waitFor(() => {
      const list = f.calls.filter((c) => c.url.pathname === '/api/v1/devices').at(-1)!;
      expect(list.url.searchParams.get('labels')).toBe('site=berlin');
      expect(list.url.searchParams.get('status')).toBe('offline');
    });
  });

  it('updates a status badge from a presence event on the stream', async () => {
    fleetRoutes(1);
    renderPage(<DevicesPage />, { path: '/devices', route: '/devices' });
    const row = await screen.findByTestId('device-row');
    await waitFor(() => expect(within(row).getByText('online')).toBeInTheDocument());
    const ws = FakeWebSocket.open('/api/v1/stream')[0];
    expect(ws.url).toContain('kinds=presence');
    expect(ws.url).toContain('devices=dev-0000');
    act(() => {
      ws.emit({ type: 'ready' });
      ws.emit({ type: 'event', kind: 'presence', device: 'dev-0000', time: '2024-01-01T00:01:00Z', data: { device_id: 'dev-0000', status: 'offline', reason: 'will', since: '2024-01-01T00:01:00Z', seq: 2 } });
    });
    expect(within(row).getByText('offline')).toBeInTheDocument();
  });
});
