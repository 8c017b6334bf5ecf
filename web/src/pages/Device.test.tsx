import { act, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { Command, Shadow } from '../types';
import { FakeUPlot, FakeWebSocket, json, on, problem, routeFetch } from '../test/fakes';
import { renderPage } from '../test/render';
import { DevicePage } from './Device';
import { mergePatch } from './device/ShadowEditor';
import { historyQuery } from './device/Charts';

const base = '/api/v1/devices/thermo-1';

function shadow(version: number, desired: Record<string, unknown>, reported: Record<string, unknown> = {}): Shadow {
  return { device_id: 'thermo-1', name: '', state: { desired, reported }, version, updated_at: '2024-01-01T00:00:00Z' };
}

function command(status: string, extra: Partial<Command> = {}): Command {
  return {
    device_id: 'thermo-1',
    id: 'c1',
    name: 'set_mode',
    params: { mode: 'eco' },
    one_way: false,
    seq: 1,
    status,
    source: 'user:u1',
    created_at: '2024-01-01T00:00:00Z',
    updated_at: '2024-01-01T00:00:01Z',
    ...extra,
  };
}

/** The routes of one thermostat; extra routes are tried first. */
function deviceRoutes(...extra: Parameters<typeof routeFetch>) {
  return routeFetch(
    ...extra,
    on('GET', base, () =>
      json({ tenant_id: 'default', id: 'thermo-1', name: 'Hall thermostat', labels: { site: 'berlin' }, metadata: {}, profile: 'thermostat', created_at: '', updated_at: '', last_seen_at: null, refused_messages: 0 }),
    ),
    on('GET', '/api/v1/profiles/thermostat', () =>
      json({ id: 'thermostat', name: 'Thermostat', telemetry: { temp: { type: 'number', unit: '°C' } }, commands: { set_mode: { params: { type: 'object', properties: { mode: {} } } }, reboot: {} } }),
    ),
    on('GET', `${base}/presence`, () => json({ device_id: 'thermo-1', status: 'online', reason: 'connected', since: '2024-01-01T00:00:00Z', seq: 3, transport: 'mqtt' })),
    on('GET', `${base}/latest`, () => json({ device: 'thermo-1', values: [{ key: 'temp', ts: '2024-01-01T00:00:00Z', value: 20 }] })),
    on('GET', `${base}/telemetry`, () => json({ device: 'thermo-1', from: '', to: '', series: [] })),
    on('GET', `${base}/quarantine`, () =>
      json({ device: 'thermo-1', from: '', to: '', count: 1, points: [{ key: 'temp', ts: '2024-01-01T00:00:00Z', value: 999, reason: 'above_max', message_id: 'm1', received_at: '2024-01-01T00:00:00Z' }] }),
    ),
    on('GET', `${base}/shadow`, () => json(shadow(1, { target_temp: 21 }, { target_temp: 20 }))),
    on('GET', `${base}/commands`, () => json({ device: 'thermo-1', commands: [] })),
  );
}

function renderDevice(role = 'admin') {
  return renderPage(<DevicePage />, { path: '/devices/:id', route: '/devices/thermo-1', role });
}

function stream(): FakeWebSocket {
  const ws = FakeWebSocket.open('/api/v1/stream').at(-1);
  if (!ws) throw new Error('no stream open');
  return ws;
}

describe('DevicePage', () => {
  it('shows the latest values and updates them from the stream', async () => {
    deviceRoutes();
    renderDevice();
    const card = await screen.findByTestId('latest-value');
    expect(card).toHaveAttribute('data-key', 'temp');
    expect(card).toHaveTextContent('20');
    expect(card).toHaveTextContent('°C');
    expect(stream().url).toContain('devices=thermo-1');

    act(() => {
      stream().emit({ type: 'ready' });
      stream().emit({
        type: 'event',
        kind: 'telemetry',
        device: 'thermo-1',
        time: new Date().toISOString(),
        data: { points: [{ key: 'temp', ts: new Date().toISOString(), value: 22.5 }, { key: 'humidity', ts: new Date().toISOString(), value: 40 }] },
      });
    });
    await waitFor(() => {
      const cards = screen.getAllByTestId('latest-value');
      expect(cards.map((c) => c.getAttribute('data-key'))).toEqual(['humidity', 'temp']);
      expect(cards[1]).toHaveTextContent('22.5');
    });
    // The live chart got the points too.
    await waitFor(() => expect(screen.getByTestId('live-chart')).toHaveAttribute('data-keys', 'humidity,temp'));
    const live = FakeUPlot.instances.find((u) => !u.destroyed && (u.data as unknown[]).length === 3);
    expect(live).toBeDefined();
    // An older point does not replace a newer one.
    act(() => {
      stream().emit({ type: 'event', kind: 'telemetry', device: 'thermo-1', time: '', data: { points: [{ key: 'temp', ts: '2020-01-01T00:00:00Z', value: 1 }] } });
    });
    await act(() => new Promise((r) => setTimeout(r, 400)));
    expect(screen.getAllByTestId('latest-value')[1]).toHaveTextContent('22.5');
  });

  it('asks for history in buckets that fit the range', async () => {
    const f = deviceRoutes();
    const user = userEvent.setup();
    renderDevice();
    await screen.findByTestId('history-range');
    const history = () => f.calls.filter((c) => c.url.pathname === `${base}/telemetry` && c.url.searchParams.get('bucket') !== '1s');
    await waitFor(() => expect(history()).toHaveLength(1));
    expect(history()[0].url.searchParams.get('bucket')).toBe('10s');
    expect(history()[0].url.searchParams.get('agg')).toBe('avg');
    await user.selectOptions(screen.getByTestId('history-range'), '7d');
    await waitFor(() => expect(history()).toHaveLength(2));
    const q = history()[1].url.searchParams;
    expect(q.get('bucket')).toBe('1h');
    expect(Date.parse(q.get('to')!) - Date.parse(q.get('from')!)).toBe(7 * 86_400_000);
  });

  it('saves the desired state with the version and reports a conflict', async () => {
    const current = shadow(2, { target_temp: 19, mode: 'eco' }, { target_temp: 20 });
    const f = deviceRoutes(
      on('PATCH', `${base}/shadow`, () => problem(409, 'conflict', 'the shadow is at version 2, not 1', { current_version: 2 })),
      (() => {
        let reads = 0;
        return on('GET', `${base}/shadow`, () => json(reads++ === 0 ? shadow(1, { target_temp: 21 }, { target_temp: 20 }) : current));
      })(),
    );
    const user = userEvent.setup();
    renderDevice('operator');
    const editor = await screen.findByTestId('shadow-desired');
    await waitFor(() => expect(editor).toHaveValue(JSON.stringify({ target_temp: 21 }, null, 2)));
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"target_temp": 23}');
    await user.click(screen.getByTestId('shadow-save'));

    expect(await screen.findByTestId('shadow-notice')).toHaveTextContent('changed meanwhile, reloaded');
    const patch = f.calls.find((c) => c.method === 'PATCH')!;
    expect((patch.init.headers as Record<string, string>)['If-Match']).toBe('"1"');
    expect((patch.init.headers as Record<string, string>)['X-CSRF-Token']).toBeUndefined(); // no login in this test
    expect(JSON.parse(patch.init.body as string)).toEqual({ state: { desired: { target_temp: 23 } } });
    // The editor shows the shadow as it is now.
    expect(editor).toHaveValue(JSON.stringify(current.state.desired, null, 2));
    expect(screen.getByText(/Version 2/)).toBeInTheDocument();
  });

  it('saves a change as a merge patch and shows the new version', async () => {
    const f = deviceRoutes(on('PATCH', `${base}/shadow`, () => json(shadow(2, { mode: 'eco' }, { target_temp: 20 }))));
    const user = userEvent.setup();
    renderDevice('operator');
    const editor = await screen.findByTestId('shadow-desired');
    await waitFor(() => expect(editor).toHaveValue(JSON.stringify({ target_temp: 21 }, null, 2)));
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"mode": "eco"}');
    await user.click(screen.getByTestId('shadow-save'));
    expect(await screen.findByTestId('shadow-notice')).toHaveTextContent('Saved as version 2');
    const patch = f.calls.find((c) => c.method === 'PATCH')!;
    expect(JSON.parse(patch.init.body as string)).toEqual({ state: { desired: { target_temp: null, mode: 'eco' } } });
  });

  it('keeps the device\'s report that arrives before the save\'s own answer', async () => {
    let answer: (r: Response) => void = () => {};
    deviceRoutes(on('PATCH', `${base}/shadow`, () => new Promise<Response>((r) => (answer = r))));
    const user = userEvent.setup();
    renderDevice('operator');
    const editor = await screen.findByTestId('shadow-desired');
    await waitFor(() => expect(editor).toHaveValue(JSON.stringify({ target_temp: 21 }, null, 2)));
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"target_temp": 23}');
    await user.click(screen.getByTestId('shadow-save'));
    act(() => {
      stream().emit({ type: 'event', kind: 'shadow', device: 'thermo-1', time: '', data: shadow(3, { target_temp: 23 }, { target_temp: 23 }) });
    });
    await act(async () => answer(json(shadow(2, { target_temp: 23 }, { target_temp: 20 }))));
    await waitFor(() => expect(screen.getByText(/Version 3/)).toBeInTheDocument());
    expect(JSON.parse(screen.getByTestId('shadow-reported').textContent!)).toEqual({ target_temp: 23 });
  });

  it.each([
    ['the device reports meanwhile: the newest version is sent', { target_temp: 21 }, '"2"'],
    ['another writer changes desired meanwhile: the old version is sent', { target_temp: 18 }, '"1"'],
  ])('%s', async (_name, desired, ifMatch) => {
    const f = deviceRoutes(on('PATCH', `${base}/shadow`, () => json(shadow(3, { target_temp: 25 }))));
    const user = userEvent.setup();
    renderDevice('operator');
    const editor = await screen.findByTestId('shadow-desired');
    await waitFor(() => expect(editor).toHaveValue(JSON.stringify({ target_temp: 21 }, null, 2)));
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"target_temp": 25}');
    act(() => {
      stream().emit({ type: 'event', kind: 'shadow', device: 'thermo-1', time: '', data: shadow(2, desired, { target_temp: 19 }) });
    });
    // The edit in progress is kept.
    expect(editor).toHaveValue('{"target_temp": 25}');
    await user.click(screen.getByTestId('shadow-save'));
    await screen.findByTestId('shadow-notice');
    const patch = f.calls.find((c) => c.method === 'PATCH')!;
    expect((patch.init.headers as Record<string, string>)['If-Match']).toBe(ifMatch);
    expect(JSON.parse(patch.init.body as string)).toEqual({ state: { desired: { target_temp: 25 } } });
  });

  it('lets a viewer read but not edit the shadow or send commands', async () => {
    deviceRoutes();
    renderDevice('viewer');
    const editor = await screen.findByTestId('shadow-desired');
    expect(editor).toHaveAttribute('readonly');
    expect(screen.queryByTestId('shadow-save')).toBeNull();
    expect(screen.queryByTestId('command-send')).toBeNull();
    expect(screen.queryByTestId('token-rotate')).toBeNull();
  });

  it('sends a command, waits for it and shows its status and reply', async () => {
    const f = deviceRoutes(on('POST', `${base}/commands`, () => json(command('sent'), 201)));
    const user = userEvent.setup();
    renderDevice('operator');
    const name = await screen.findByTestId('command-name');
    await waitFor(() => expect(screen.getByText(/The profile defines: reboot, set_mode/)).toBeInTheDocument());
    await user.type(name, 'set_mode');
    const params = screen.getByTestId('command-params');
    await user.clear(params);
    await user.click(params);
    await user.paste('{"mode":"eco"}');
    await user.click(screen.getByTestId('command-send'));

    expect(await screen.findByTestId('command-status')).toHaveTextContent('sent');
    const post = f.calls.find((c) => c.method === 'POST')!;
    expect(post.url.searchParams.get('wait')).toBe('10s');
    expect(JSON.parse(post.init.body as string)).toEqual({ name: 'set_mode', params: { mode: 'eco' } });

    // The reply arrives on the stream after the wait ended.
    act(() => {
      stream().emit({ type: 'event', kind: 'command', device: 'thermo-1', time: '', data: command('succeeded', { updated_at: '2024-01-01T00:00:05Z', result: { mode: 'eco', ok: true } }) });
    });
    expect(screen.getByTestId('command-status')).toHaveTextContent('succeeded');
    expect(JSON.parse(screen.getByTestId('command-reply').textContent!)).toEqual({ mode: 'eco', ok: true });
    const recent = screen.getByRole('region', { name: 'Recent commands' });
    expect(within(recent).getByText('set_mode')).toBeInTheDocument();
  });

  it('shows why a command was rejected', async () => {
    deviceRoutes(
      on('POST', `${base}/commands`, () =>
        problem(422, 'invalid', 'params do not match the schema of set_mode: missing mode'),
      ),
    );
    const user = userEvent.setup();
    renderDevice('operator');
    await user.type(await screen.findByTestId('command-name'), 'set_mode');
    await user.click(screen.getByTestId('command-send'));
    expect(await screen.findByRole('alert')).toHaveTextContent('missing mode');
  });

  it('replaces the token after a confirmation and shows it once', async () => {
    const f = deviceRoutes(on('POST', `${base}/token`, () => json({ token: 'thermo-1.s3cret' })));
    const user = userEvent.setup();
    renderDevice('admin');
    await user.click(await screen.findByTestId('token-rotate'));
    const dialog = screen.getByRole('dialog', { name: /Replace the device's token/ });
    expect(f.calls.some((c) => c.url.pathname === `${base}/token`)).toBe(false);
    await user.click(within(dialog).getByTestId('token-confirm'));
    expect(await screen.findByTestId('token-value')).toHaveTextContent('thermo-1.s3cret');
    expect(screen.queryByRole('dialog')).toBeNull();
  });

  it('closes the confirmation with Escape without replacing the token', async () => {
    const f = deviceRoutes();
    const user = userEvent.setup();
    renderDevice('admin');
    await user.click(await screen.findByTestId('token-rotate'));
    expect(screen.getByRole('dialog')).toBeInTheDocument();
    await user.keyboard('{Escape}');
    expect(screen.queryByRole('dialog')).toBeNull();
    expect(f.calls.some((c) => c.method === 'POST')).toBe(false);
  });

  it('shows presence now, and changes from the stream', async () => {
    deviceRoutes();
    renderDevice();
    expect(await screen.findByTestId('presence-current')).toHaveTextContent(/online.*connected.*mqtt/);
    act(() => {
      stream().emit({ type: 'event', kind: 'presence', device: 'thermo-1', time: '', data: { device_id: 'thermo-1', status: 'offline', reason: 'keepalive_timeout', since: new Date().toISOString(), seq: 4 } });
    });
    expect(screen.getByTestId('presence-current')).toHaveTextContent(/offline.*keepalive_timeout/);
    expect(screen.getByRole('list', { name: /Presence changes/ }).children).toHaveLength(2);
    expect(within(screen.getByTestId('device-status')).getByText('offline')).toBeInTheDocument();
  });

  it('lists quarantined readings', async () => {
    deviceRoutes();
    renderDevice();
    const cell = await screen.findByText('999');
    const row = cell.closest('tr')!;
    expect(within(row).getByText('above max')).toBeInTheDocument();
    expect(within(row).getByText('temp')).toBeInTheDocument();
    expect(screen.getByText(/1 in all/)).toBeInTheDocument();
  });

  it('says so when the device does not exist', async () => {
    routeFetch();
    renderDevice();
    expect(await screen.findByText('There is no device thermo-1.')).toBeInTheDocument();
  });
});

describe('mergePatch', () => {
  it.each([
    [{ a: 1 }, { a: 1 }, {}],
    [{ a: 1 }, { a: 2 }, { a: 2 }],
    [{ a: 1, b: 2 }, { b: 2 }, { a: null }],
    [{}, { n: { x: 1 } }, { n: { x: 1 } }],
    [{ n: { x: 1, y: 2 } }, { n: { x: 1, z: 3 } }, { n: { y: null, z: 3 } }],
    [{ n: { x: 1 } }, { n: 5 }, { n: 5 }],
    [{ l: [1, 2] }, { l: [1, 2] }, {}],
    [{ l: [1, 2] }, { l: [2] }, { l: [2] }],
  ])('turns %j into %j with %j', (from, to, want) => {
    expect(mergePatch(from, to)).toEqual(want);
  });
});

describe('historyQuery', () => {
  it('asks for raw points for a short range and buckets for a long one', () => {
    const to = Date.parse('2024-01-02T00:00:00Z');
    expect(historyQuery('d 1', 5 * 60_000, to)).toBe(
      '/api/v1/devices/d%201/telemetry?from=2024-01-01T23%3A55%3A00.000Z&to=2024-01-02T00%3A00%3A00.000Z&limit=1000',
    );
    expect(historyQuery('d', 86_400_000, to)).toContain('agg=avg&bucket=5m');
  });
});
