// Test doubles for what jsdom lacks: a WebSocket the test drives, a uPlot
// that records its data instead of drawing on a canvas, and fetch routes.
import { vi } from 'vitest';
import type { StreamMessage } from '../api';

export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  url: string;
  readyState = 0;
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  closed = false;

  constructor(url: string) {
    this.url = url;
    FakeWebSocket.instances.push(this);
  }

  close() {
    this.closed = true;
    this.readyState = 3;
  }

  send() {}

  /** Delivers a stream message as the server would. */
  emit(m: StreamMessage | Record<string, unknown>) {
    this.readyState = 1;
    this.onmessage?.(new MessageEvent('message', { data: JSON.stringify(m) }));
  }

  /** The server hangs up. */
  drop() {
    this.readyState = 3;
    this.onclose?.(new CloseEvent('close'));
  }

  /** The open sockets whose URL contains part. */
  static open(part = ''): FakeWebSocket[] {
    return FakeWebSocket.instances.filter((w) => !w.closed && w.url.includes(part));
  }
}

export class FakeUPlot {
  static instances: FakeUPlot[] = [];
  data: unknown;
  width: number;
  destroyed = false;
  constructor(opts: { width: number }, data: unknown) {
    this.width = opts.width;
    this.data = data;
    FakeUPlot.instances.push(this);
  }
  setData(d: unknown) {
    this.data = d;
  }
  setSize(s: { width: number }) {
    this.width = s.width;
  }
  destroy() {
    this.destroyed = true;
  }
}

type Route = (url: URL, init: RequestInit) => Response | Promise<Response> | undefined;

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': status >= 400 ? 'application/problem+json' : 'application/json', ...headers },
  });
}

export function problem(status: number, code: string, detail: string, extra: Record<string, unknown> = {}): Response {
  return json({ type: 'about:blank', title: 'x', status, code, detail, ...extra }, status);
}

/**
 * Replaces fetch with routes tried in order; the first that answers wins.
 * An unrouted request answers 404 and is recorded in unrouted.
 */
export function routeFetch(...routes: Route[]) {
  const calls: { method: string; url: URL; init: RequestInit }[] = [];
  const unrouted: string[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = new URL(String(input), 'http://localhost');
    calls.push({ method: (init.method ?? 'GET').toUpperCase(), url, init });
    for (const r of routes) {
      const res = await r(url, init);
      if (res) return res;
    }
    unrouted.push(`${init.method ?? 'GET'} ${url.pathname}${url.search}`);
    return problem(404, 'not_found', `no route ${url.pathname}`);
  });
  vi.stubGlobal('fetch', fn);
  return { calls, unrouted, fn };
}

/** A route answering method and path (exact, without the query). */
export function on(method: string, path: string, answer: (url: URL, init: RequestInit) => Response | Promise<Response>): Route {
  return (url, init) => ((init.method ?? 'GET').toUpperCase() === method && url.pathname === path ? answer(url, init) : undefined);
}
