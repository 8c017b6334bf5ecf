// Client for the Tether HTTP API, shared by every page of the dashboard.
//
// Requests are JSON in and out and authenticated by the session cookie;
// unsafe methods carry the CSRF token the login or session response
// returned, which is kept in memory only. Errors arrive as
// application/problem+json and are thrown as ApiError.

/** A problem the API answered with, or a network failure (status 0). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  /** The whole problem body, for the fields some endpoints add. */
  readonly problem: Record<string, unknown>;

  constructor(status: number, code: string, detail: string, problem: Record<string, unknown> = {}) {
    super(detail || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.problem = problem;
  }
}

export interface ApiInit {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

let csrfToken = '';

/** Sets the CSRF token sent with unsafe requests (tests use it too). */
export function setCsrfToken(token: string): void {
  csrfToken = token;
}

/** The CSRF token in memory, empty when signed out. */
export function getCsrfToken(): string {
  return csrfToken;
}

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Parses a failed response into an ApiError. */
export async function toApiError(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  let body: Record<string, unknown> = {};
  if (text) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === 'object') body = parsed as Record<string, unknown>;
    } catch {
      body = {};
    }
  }
  const code = typeof body.code === 'string' ? body.code : '';
  let detail = typeof body.detail === 'string' ? body.detail : '';
  if (!detail) detail = typeof body.title === 'string' && body.title ? body.title : res.statusText || `HTTP ${res.status}`;
  if (res.status === 429 && !body.detail) {
    const retry = res.headers.get('Retry-After');
    if (retry) detail = `too many attempts; try again in ${retry} s`;
  }
  return new ApiError(res.status, code, detail, body);
}

/** Calls the API and returns its JSON answer (undefined for 204). */
export async function api<T>(path: string, init: ApiInit = {}): Promise<T> {
  const method = (init.method ?? 'GET').toUpperCase();
  const headers: Record<string, string> = { Accept: 'application/json', ...init.headers };
  let body: BodyInit | undefined;
  if (init.body !== undefined) {
    if (typeof init.body === 'string') {
      body = init.body;
    } else {
      body = JSON.stringify(init.body);
    }
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
      headers['Content-Type'] = 'application/json';
    }
  }
  if (!safeMethods.has(method) && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'same-origin', signal: init.signal });
  } catch (err) {
    if (err instanceof DOMException && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'unavailable', 'cannot reach the server; check the connection');
  }
  if (!res.ok) {
    const e = await toApiError(res);
    if (res.status === 401 && !path.startsWith('/api/v1/auth/')) notifyUnauthorized();
    throw e;
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  if (!text) return undefined as T;
  return JSON.parse(text) as T;
}

// ---- session ---------------------------------------------------------------

export interface User {
  id: string;
  email: string;
  role: 'admin' | 'operator' | 'viewer' | string;
  tenant_id?: string;
}

export interface Session {
  user: User;
  csrf_token: string;
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();

/** Calls fn whenever an API call answers 401 (the session ended). */
export function onUnauthorized(fn: Listener): () => void {
  unauthorizedListeners.add(fn);
  return () => unauthorizedListeners.delete(fn);
}

function notifyUnauthorized(): void {
  for (const fn of unauthorizedListeners) fn();
}

/** Reads the current session, or null when signed out. */
export async function getSession(): Promise<Session | null> {
  try {
    const s = await api<Session | undefined>('/api/v1/auth/session');
    // Signed out may also be answered 204 or {user: null}.
    if (!s?.user) {
      setCsrfToken('');
      return null;
    }
    setCsrfToken(s.csrf_token ?? '');
    return s;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 404)) {
      setCsrfToken('');
      return null;
    }
    throw err;
  }
}

/** Signs in; throws ApiError (401 wrong credentials, 429 locked). */
export async function login(email: string, password: string): Promise<Session> {
  const s = await api<Session>('/api/v1/auth/login', { method: 'POST', body: { email, password } });
  setCsrfToken(s.csrf_token ?? '');
  return s;
}

/** Signs out and forgets the CSRF token. */
export async function logout(): Promise<void> {
  try {
    await api<void>('/api/v1/auth/logout', { method: 'POST' });
  } finally {
    setCsrfToken('');
  }
}

/** Changes the signed-in user's password. */
export async function changePassword(currentPassword: string, newPassword: string): Promise<void> {
  await api<void>('/api/v1/auth/password', {
    method: 'POST',
    body: { current_password: currentPassword, new_password: newPassword },
  });
}

const roleRank: Record<string, number> = { viewer: 1, operator: 2, admin: 3 };

/** Reports whether role have is at least role need. */
export function roleAtLeast(have: string | undefined, need: 'viewer' | 'operator' | 'admin'): boolean {
  return (roleRank[have ?? ''] ?? 0) >= roleRank[need];
}

// ---- live stream -------------------------------------------------------------

export type StreamKind = 'telemetry' | 'presence' | 'shadow' | 'command' | 'alert';

export interface StreamParams {
  kinds?: StreamKind[] | string[];
  devices?: string[];
  labels?: string | Record<string, string>;
  profile?: string;
}

export interface TelemetryPoint {
  key: string;
  ts: string;
  value: unknown;
}

export type StreamMessage =
  | { type: 'ready' }
  | { type: 'lagging'; dropped: number; message: string }
  | { type: 'event'; kind: StreamKind | string; device: string; time: string; data: any }
  | { type: 'status'; connected: boolean };

/** Builds the query string of a stream subscription. */
export function streamQuery(params: StreamParams): string {
  const q = new URLSearchParams();
  if (params.kinds?.length) q.set('kinds', params.kinds.join(','));
  if (params.devices?.length) q.set('devices', params.devices.join(','));
  if (params.labels) {
    const l =
      typeof params.labels === 'string'
        ? params.labels
        : Object.entries(params.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(',');
    if (l) q.set('labels', l);
  }
  if (params.profile) q.set('profile', params.profile);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Reconnect delays: 0.5 s doubling to 15 s, with jitter. */
export function backoff(attempt: number): number {
  const base = Math.min(15000, 500 * 2 ** Math.min(attempt, 5));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/**
 * Opens the live event stream and calls onMessage for each message; it
 * reconnects with backoff after the connection drops, reporting
 * {type:'status', connected} on each change. The returned function closes it.
 */
export function openStream(params: StreamParams, onMessage: (m: StreamMessage) => void): () => void {
  let ws: WebSocket | null = null;
  let closed = false;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let connected = false;

  const setConnected = (c: boolean) => {
    if (c !== connected) {
      connected = c;
      onMessage({ type: 'status', connected: c });
    }
  };

  const connect = () => {
    if (closed) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/api/v1/stream${streamQuery(params)}`;
    let sock: WebSocket;
    try {
      sock = new WebSocket(url);
    } catch {
      schedule();
      return;
    }
    ws = sock;
    sock.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== 'string') return;
      let m: StreamMessage;
      try {
        m = JSON.parse(ev.data) as StreamMessage;
      } catch {
        return;
      }
      if (m.type === 'ready') {
        attempt = 0;
        setConnected(true);
      }
      onMessage(m);
    };
    sock.onclose = () => {
      if (ws === sock) ws = null;
      setConnected(false);
      schedule();
    };
    sock.onerror = () => {
      // onclose follows and reconnects.
    };
  };

  const schedule = () => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(connect, backoff(attempt++));
  };

  connect();
  return () => {
    closed = true;
    clearTimeout(timer);
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close();
      ws = null;
    }
  };
}
