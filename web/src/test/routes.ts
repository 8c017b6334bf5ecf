// Fetch stubs for the page tests: replies by "METHOD /path", the calls
// made, and a signed-in session of a role.
import { vi } from 'vitest';
import type { Session } from '../api';

export interface Call {
  method: string;
  url: string;
  body: any;
}

export type Reply = Response | ((c: Call) => Response | Promise<Response>);

/** A JSON (or problem+json, with type) response; 204 or no body has none. */
export function json(status: number, body?: unknown, type = 'application/json'): Response {
  return new Response(status === 204 || body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': type },
  });
}

/** Stubs fetch: reply answers each call; it returns the calls made. */
export function stubFetch(reply: (c: Call) => Response | Promise<Response>): Call[] {
  const calls: Call[] = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
      const c: Call = {
        method: (init?.method ?? 'GET').toUpperCase(),
        url: String(input),
        body: init?.body ? JSON.parse(String(init.body)) : undefined,
      };
      calls.push(c);
      return reply(c);
    }),
  );
  return calls;
}

/** Stubs fetch with replies by "METHOD /path" (without the query); it returns the calls made. */
export function routeFetch(routes: Record<string, Reply>): Call[] {
  return stubFetch((c) => {
    const r = routes[`${c.method} ${c.url.split('?')[0]}`];
    if (!r) return json(404, { code: 'not_found', detail: `no route ${c.method} ${c.url}` }, 'application/problem+json');
    return typeof r === 'function' ? r(c) : r.clone();
  });
}

/** A session of a user with role. */
export function session(role: string): Session {
  return { user: { id: 'u1', email: 'ada@example.com', role }, csrf_token: 'csrf' };
}
