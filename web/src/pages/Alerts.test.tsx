import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { act, render, screen, waitFor, within, configure } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter, Route, Routes } from 'react-router-dom';
import { openStream, type StreamMessage } from '../api';
import { SessionContext } from '../session';
import { AlertsPage, REFRESH_MS, matchesFilter, type Alert } from './Alerts';
import { json, session, stubFetch } from '../test/routes';

// The live stream is a WebSocket; here the test plays the server.
vi.mock('../api', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../api')>();
  return { ...mod, openStream: vi.fn(() => () => {}) };
});

function renderPage(role = 'operator', path = '/alerts') {
  return render(
    <SessionContext.Provider value={{ session: session(role), setSession: () => {} }}>
      <MemoryRouter initialEntries={[path]}>
        <Routes>
          <Route path="/alerts" element={<AlertsPage />} />
        </Routes>
      </MemoryRouter>
    </SessionContext.Provider>,
  );
}

const base: Alert = {
  id: 'a1',
  rule_id: 'r1',
  device_id: 'fridge-1',
  type: 'door_open',
  severity: 'warning',
  status: 'active',
  message: 'door open for 2 min',
  count: 3,
  raised_at: '2025-01-02T10:00:00Z',
  last_seen_at: '2025-01-02T10:02:00Z',
};

const critical: Alert = { ...base, id: 'a2', device_id: 'arm-1', type: 'vibration', severity: 'critical', status: 'acknowledged', raised_at: '2025-01-02T09:00:00Z' };

/** The function the page gave openStream. */
function streamListener(): (m: StreamMessage) => void {
  const calls = vi.mocked(openStream).mock.calls;
  expect(calls.length).toBeGreaterThan(0);
  expect(calls[calls.length - 1][0]).toEqual({ kinds: ['alert'] });
  return calls[calls.length - 1][1];
}

// The machine running the tests may be busy: wait longer than the
// defaults before calling a test failed.
configure({ asyncUtilTimeout: 5000 });
vi.setConfig({ testTimeout: 30_000 });

beforeEach(() => {
  vi.mocked(openStream).mockClear();
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe('matchesFilter', () => {
  it.each([
    ['open', 'active', true],
    ['open', 'acknowledged', true],
    ['open', 'cleared', false],
    ['active', 'acknowledged', false],
    ['cleared', 'cleared', true],
    ['all', 'cleared', true],
  ])('puts a %s filter and an alert %s: %s', (filter, status, want) => {
    expect(matchesFilter({ ...base, status }, filter)).toBe(want);
  });
});

describe('AlertsPage', () => {
  it('lists the open alerts with severity, device link and status', async () => {
    const calls = stubFetch(() => json(200, { alerts: [base, critical] }));
    renderPage();
    const rows = await screen.findAllByTestId('alert-row');
    expect(rows.map((r) => r.getAttribute('data-alert-id'))).toEqual(['a1', 'a2']);
    expect(calls[0].url).toBe('/api/v1/alerts?limit=100&status=open');
    expect(within(rows[0]).getByRole('link', { name: 'fridge-1' }).getAttribute('href')).toBe('/devices/fridge-1');
    expect(within(rows[1]).getByText('critical').className).toContain('badge-bad');
    expect(within(rows[0]).getByTestId('alert-status').textContent).toBe('active');
    // An acknowledged alert can be cleared but not acknowledged again.
    expect(within(rows[1]).queryByTestId('alert-ack')).toBeNull();
    expect(within(rows[1]).getByTestId('alert-clear')).toBeTruthy();
  });

  it('acknowledges an alert with a POST to its URL and shows the new status', async () => {
    const calls = stubFetch((c) =>
      c.method === 'POST' && c.url === '/api/v1/alerts/a1/acknowledge'
        ? json(200, { ...base, status: 'acknowledged', acknowledged_by: 'user:u1', acknowledged_at: '2025-01-02T10:03:00Z' })
        : json(200, { alerts: [base] }),
    );
    renderPage();
    const row = (await screen.findAllByTestId('alert-row'))[0];
    await userEvent.click(within(row).getByTestId('alert-ack'));
    await waitFor(() => expect(within(row).getByTestId('alert-status').textContent).toBe('acknowledged'));
    expect(calls.filter((c) => c.method === 'POST').map((c) => c.url)).toEqual(['/api/v1/alerts/a1/acknowledge']);
    expect(within(row).queryByTestId('alert-ack')).toBeNull();
    expect(screen.getByRole('status', { hidden: true }).textContent).toContain('acknowledged');
  });

  it('clears an alert and keeps the row until the next read', async () => {
    const calls = stubFetch((c) =>
      c.method === 'POST' ? json(200, { ...critical, status: 'cleared' }) : json(200, { alerts: [critical] }),
    );
    renderPage();
    const row = (await screen.findAllByTestId('alert-row'))[0];
    await userEvent.click(within(row).getByTestId('alert-clear'));
    await waitFor(() => expect(within(row).getByTestId('alert-status').textContent).toBe('cleared'));
    expect(calls.find((c) => c.method === 'POST')?.url).toBe('/api/v1/alerts/a2/clear');
    expect(within(row).queryByTestId('alert-clear')).toBeNull();
  });

  it('shows the server’s refusal of an action', async () => {
    stubFetch((c) =>
      c.method === 'POST'
        ? json(403, { code: 'forbidden', detail: 'needs the operator role' }, 'application/problem+json')
        : json(200, { alerts: [base] }),
    );
    renderPage();
    await userEvent.click(await screen.findByTestId('alert-ack'));
    expect((await screen.findByRole('alert')).textContent).toContain('needs the operator role');
    expect(screen.getByTestId('alert-status').textContent).toBe('active');
  });

  it('asks for the chosen status', async () => {
    const calls = stubFetch((c) => json(200, { alerts: c.url.includes('status=cleared') ? [{ ...base, status: 'cleared' }] : [base] }));
    renderPage();
    await screen.findAllByTestId('alert-row');
    await userEvent.selectOptions(screen.getByLabelText('Status'), 'cleared');
    await waitFor(() => expect(screen.getByTestId('alert-status').textContent).toBe('cleared'));
    expect(calls[calls.length - 1].url).toBe('/api/v1/alerts?limit=100&status=cleared');
    await userEvent.selectOptions(screen.getByLabelText('Status'), 'all');
    await waitFor(() => expect(calls[calls.length - 1].url).toBe('/api/v1/alerts?limit=100'));
    expect(vi.mocked(openStream)).toHaveBeenCalledTimes(1);
  });

  it('follows alert events of the live stream', async () => {
    stubFetch(() => json(200, { alerts: [base] }));
    renderPage();
    await screen.findAllByTestId('alert-row');
    const send = streamListener();
    const raised: Alert = { ...base, id: 'a3', type: 'too_warm', raised_at: '2025-01-02T11:00:00Z' };
    act(() => send({ type: 'event', kind: 'alert', device: 'fridge-1', time: raised.raised_at, data: raised }));
    await waitFor(() =>
      expect(screen.getAllByTestId('alert-row').map((r) => r.getAttribute('data-alert-id'))).toEqual(['a3', 'a1']),
    );
    act(() => send({ type: 'event', kind: 'alert', device: 'fridge-1', time: '', data: { ...base, status: 'acknowledged' } }));
    await waitFor(() =>
      expect(document.querySelector('[data-alert-id="a1"] [data-testid="alert-status"]')?.textContent).toBe('acknowledged'),
    );
    // A cleared alert leaves the inbox of open alerts.
    act(() => send({ type: 'event', kind: 'alert', device: 'fridge-1', time: '', data: { ...raised, status: 'cleared' } }));
    await waitFor(() => expect(screen.getAllByTestId('alert-row').map((r) => r.getAttribute('data-alert-id'))).toEqual(['a1']));
  });

  it('reads the list again every 10 s and after the stream lagged', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let n = 0;
    const calls = stubFetch(() => {
      n++;
      return json(200, { alerts: n > 1 ? [base, critical] : [base] });
    });
    renderPage();
    await screen.findAllByTestId('alert-row');
    expect(calls).toHaveLength(1);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(REFRESH_MS);
    });
    await waitFor(() => expect(screen.getAllByTestId('alert-row')).toHaveLength(2));
    expect(calls).toHaveLength(2);
    const send = streamListener();
    act(() => send({ type: 'lagging', dropped: 5, message: 'lagging, events dropped' }));
    await waitFor(() => expect(calls).toHaveLength(3));
  });

  it('hides acknowledge and clear from a viewer', async () => {
    stubFetch(() => json(200, { alerts: [base] }));
    renderPage('viewer');
    await screen.findAllByTestId('alert-row');
    expect(screen.queryByTestId('alert-ack')).toBeNull();
    expect(screen.queryByTestId('alert-clear')).toBeNull();
    expect(screen.getByText(/needs the operator role/)).toBeTruthy();
  });

  it('loads the next page on demand', async () => {
    const calls = stubFetch((c) =>
      c.url.includes('after=a1') ? json(200, { alerts: [critical] }) : json(200, { alerts: [base], next_after: 'a1' }),
    );
    renderPage();
    await userEvent.click(await screen.findByRole('button', { name: 'Load more' }));
    await waitFor(() => expect(screen.getAllByTestId('alert-row')).toHaveLength(2));
    expect(calls[calls.length - 1].url).toBe('/api/v1/alerts?limit=100&status=open&after=a1');
    expect(screen.queryByRole('button', { name: 'Load more' })).toBeNull();
  });
});
