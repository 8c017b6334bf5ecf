import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError, api, backoff, getCsrfToken, getSession, login, logout, openStream, setCsrfToken, streamQuery } from './api';

function respond(status: number, body?: unknown, headers: Record<string, string> = {}) {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  return new Response(status === 204 ? null : text, { status, headers });
}

function mockFetch(...responses: Response[]) {
  const fn = vi.fn<typeof fetch>();
  for (const r of responses) fn.mockResolvedValueOnce(r);
  vi.stubGlobal('fetch', fn);
  return fn;
}

afterEach(() => {
  vi.unstubAllGlobals();
  setCsrfToken('');
});

describe('api', () => {
  it('parses a problem+json answer into an ApiError with status, code and detail', async () => {
    mockFetch(
      respond(
        422,
        { type: 'about:blank', title: 'Unprocessable Entity', status: 422, detail: 'name is too long', code: 'invalid' },
        { 'Content-Type': 'application/problem+json' },
      ),
    );
    const err = await api('/api/v1/devices', { method: 'POST', body: { id: 'x' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    const e = err as ApiError;
    expect(e.status).toBe(422);
    expect(e.code).toBe('invalid');
    expect(e.detail).toBe('name is too long');
    expect(e.message).toBe('name is too long');
  });

  it('falls back to the status text when the error body is not JSON', async () => {
    mockFetch(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
    const e = (await api('/api/v1/x').catch((x: unknown) => x)) as ApiError;
    expect(e.status).toBe(502);
    expect(e.code).toBe('');
    expect(e.detail).toBe('Bad Gateway');
  });

  it('reports a network failure as status 0', async () => {
    vi.stubGlobal('fetch', vi.fn<typeof fetch>().mockRejectedValue(new TypeError('Failed to fetch')));
    const e = (await api('/api/v1/x').catch((x: unknown) => x)) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect(e.status).toBe(0);
  });

  it('returns undefined for 204 and JSON otherwise', async () => {
    mockFetch(respond(204), respond(200, { a: 1 }));
    expect(await api('/api/v1/a', { method: 'DELETE' })).toBeUndefined();
    expect(await api<{ a: number }>('/api/v1/b')).toEqual({ a: 1 });
  });

  it('sends the CSRF token from the login answer on unsafe methods only', async () => {
    const f = mockFetch(
      respond(200, { user: { id: 'u1', email: 'a@b.c', role: 'admin' }, csrf_token: 'tok-123' }),
      respond(200, {}),
      respond(200, {}),
      respond(204),
    );
    await login('a@b.c', 'pw');
    expect(getCsrfToken()).toBe('tok-123');
    await api('/api/v1/devices');
    await api('/api/v1/devices', { method: 'POST', body: { id: 'd' } });
    await logout();

    const loginInit = f.mock.calls[0][1]!;
    expect(JSON.parse(loginInit.body as string)).toEqual({ email: 'a@b.c', password: 'pw' });
    expect(loginInit.credentials).toBe('same-origin');
    const get = f.mock.calls[1][1]!.headers as Record<string, string>;
    expect(get['X-CSRF-Token']).toBeUndefined();
    const post = f.mock.calls[2][1]!.headers as Record<string, string>;
    expect(post['X-CSRF-Token']).toBe('tok-123');
    expect(post['Content-Type']).toBe('application/json');
    const out = f.mock.calls[3][1]!.headers as Record<string, string>;
    expect(out['X-CSRF-Token']).toBe('tok-123');
    expect(getCsrfToken()).toBe('');
  });

  it('reads the session and its CSRF token, or null when signed out', async () => {
    mockFetch(
      respond(200, { user: { id: 'u1', email: 'a@b.c', role: 'viewer' }, csrf_token: 'fresh' }),
      respond(401, { detail: 'not signed in', code: 'unauthenticated' }),
    );
    const s = await getSession();
    expect(s?.user.role).toBe('viewer');
    expect(getCsrfToken()).toBe('fresh');
    expect(await getSession()).toBeNull();
    expect(getCsrfToken()).toBe('');
  });

  it('explains a lockout with Retry-After when the body has no detail', async () => {
    mockFetch(respond(429, '', { 'Retry-After': '60' }));
    const e = (await login('a@b.c', 'x').catch((x: unknown) => x)) as ApiError;
    expect(e.status).toBe(429);
    expect(e.detail).toContain('60');
  });
});

describe('streamQuery', () => {
  it.each([
    [{}, ''],
    [{ kinds: ['telemetry', 'presence'] }, '?kinds=telemetry%2Cpresence'],
    [{ devices: ['d1'], labels: { site: 'a', floor: '2' } }, '?devices=d1&labels=site%3Da%2Cfloor%3D2'],
    [{ labels: 'site=a', profile: 'fridge' }, '?labels=site%3Da&profile=fridge'],
  ])('encodes %j as %s', (params, want) => {
    expect(streamQuery(params)).toBe(want);
  });
});

describe('backoff', () => {
  it('grows and stays within 15 s with jitter', () => {
    expect(backoff(0)).toBeGreaterThanOrEqual(375);
    expect(backoff(0)).toBeLessThanOrEqual(625);
    for (let i = 0; i < 20; i++) expect(backoff(i)).toBeLessThanOrEqual(15000 * 1.25);
    expect(backoff(10)).toBeGreaterThanOrEqual(15000 * 0.75);
  });
});

describe('openStream', () => {
  it('forwards messages, reports the connection and reconnects after a drop', async () => {
    vi.useFakeTimers();
    const { FakeWebSocket } = await import('./test/fakes');
    const got: unknown[] = [];
    const close = openStream({ kinds: ['telemetry'], devices: ['d1'] }, (m) => got.push(m));
    const first = FakeWebSocket.instances[0];
    expect(first.url).toBe(`ws://${location.host}/api/v1/stream?kinds=telemetry&devices=d1`);
    first.emit({ type: 'ready' });
    first.emit({ type: 'event', kind: 'telemetry', device: 'd1', time: 't', data: { points: [] } });
    first.emit({ type: 'lagging', dropped: 3, message: 'lagging, events dropped' });
    expect(got).toEqual([
      { type: 'status', connected: true },
      { type: 'ready' },
      { type: 'event', kind: 'telemetry', device: 'd1', time: 't', data: { points: [] } },
      { type: 'lagging', dropped: 3, message: 'lagging, events dropped' },
    ]);

    first.drop();
    expect(got.at(-1)).toEqual({ type: 'status', connected: false });
    expect(FakeWebSocket.instances).toHaveLength(1);
    vi.advanceTimersByTime(700);
    expect(FakeWebSocket.instances).toHaveLength(2);
    // A second drop before ready waits longer.
    FakeWebSocket.instances[1].drop();
    vi.advanceTimersByTime(700);
    expect(FakeWebSocket.instances).toHaveLength(2);
    vi.advanceTimersByTime(700);
    expect(FakeWebSocket.instances).toHaveLength(3);

    close();
    expect(FakeWebSocket.instances[2].closed).toBe(true);
    vi.advanceTimersByTime(60_000);
    expect(FakeWebSocket.instances).toHaveLength(3);
  });
});
