import { act, screen, waitFor, within } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { json, on, problem, routeFetch } from '../test/fakes';
import { renderPage } from '../test/render';
import { OverviewPage, rate } from './Overview';

describe('rate', () => {
  it.each([
    [null, { n: 10, t: 0 }, null],
    [{ n: 10, t: 0 }, { n: 60, t: 5000 }, 10],
    [{ n: 10, t: 0 }, { n: 10, t: 5000 }, 0],
    [{ n: 100, t: 0 }, { n: 5, t: 5000 }, null],
    [{ n: 1, t: 5000 }, { n: 2, t: 5000 }, null],
  ])('from %j to %j is %s', (prev, next, want) => {
    expect(rate(prev, next)).toBe(want);
  });
});

describe('OverviewPage', () => {
  it('shows fleet counts, open alerts and a rate from two reads', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let received = 1000;
    let t = Date.parse('2024-01-01T00:00:00Z');
    const f = routeFetch(
      on('GET', '/api/v1/fleet', () => {
        const body = { devices: { total: 10, online: 6, stale: 1, offline: 3 }, alerts: { active: 2, acknowledged: 1 }, messages: { received, points: received * 2 }, time: new Date(t).toISOString() };
        received += 50;
        t += 2000;
        return json(body);
      }),
      on('GET', '/api/v1/alerts', () =>
        json({
          alerts: [
            { id: 'a1', rule_id: 'r', device_id: 'fridge-1', type: 'door_open', severity: 'critical', status: 'active', count: 1, raised_at: '2024-01-01T00:00:00Z', last_seen_at: '' },
            { id: 'a2', rule_id: 'r', device_id: 'fridge-2', type: 'too_warm', severity: 'warning', status: 'active', count: 1, raised_at: '2024-01-01T00:05:00Z', last_seen_at: '' },
          ],
        }),
      ),
    );
    renderPage(<OverviewPage />);
    await waitFor(() => expect(screen.getByTestId('fleet-online')).toHaveTextContent('6'));
    expect(screen.getByTestId('fleet-stale')).toHaveTextContent('1');
    expect(screen.getByTestId('fleet-offline')).toHaveTextContent('3');
    expect(screen.getByTestId('fleet-alerts')).toHaveTextContent('3');
    expect(screen.getByTestId('fleet-rate')).toHaveTextContent('—');
    const items = within(screen.getByRole('region', { name: 'Latest open alerts' })).getAllByRole('listitem');
    expect(items[0]).toHaveTextContent('too_warm on fridge-2');
    expect(items[1]).toHaveTextContent('door_open on fridge-1');
    expect(f.calls.find((c) => c.url.pathname === '/api/v1/alerts')?.url.searchParams.get('status')).toBe('open');

    await act(() => vi.advanceTimersByTimeAsync(2100));
    await waitFor(() => expect(screen.getByTestId('fleet-rate')).toHaveTextContent('25.0'));
  });

  it('falls back to the node counters when there is no fleet endpoint', async () => {
    routeFetch(
      on('GET', '/api/v1/fleet', () => problem(404, 'not_found', 'no API route')),
      on('GET', '/api/v1/stats', () => json({ ingest: { accepted_messages: 5, accepted_points: 5 }, stored_points: 5 })),
      on('GET', '/api/v1/alerts', () => json({ alerts: [] })),
    );
    renderPage(<OverviewPage />);
    expect(await screen.findByText('No open alerts.')).toBeInTheDocument();
    expect(screen.getByTestId('fleet-online')).toHaveTextContent('—');
    expect(screen.getByTestId('fleet-alerts')).toHaveTextContent('0');
    expect(screen.queryByRole('alert')).toBeNull();
  });
});
