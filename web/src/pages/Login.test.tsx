import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { useState } from 'react';
import { MemoryRouter, Route, Routes } from 'react-router-dom';
import { describe, expect, it } from 'vitest';
import { getCsrfToken, type Session } from '../api';
import { SessionContext } from '../session';
import { json, on, problem, routeFetch } from '../test/fakes';
import { LoginPage } from './Login';

function Harness({ route = '/login' }: { route?: string }) {
  const [session, setSession] = useState<Session | null>(null);
  return (
    <SessionContext.Provider value={{ session, setSession }}>
      <MemoryRouter initialEntries={[route]}>
        <Routes>
          <Route path="/login" element={<LoginPage />} />
          <Route path="/" element={<p>overview for {session?.user.email}</p>} />
          <Route path="/devices/:id" element={<p>device page for {session?.user.role}</p>} />
        </Routes>
      </MemoryRouter>
    </SessionContext.Provider>
  );
}

async function signIn(email: string, password: string) {
  const user = userEvent.setup();
  await user.type(screen.getByLabelText('E-mail'), email);
  await user.type(screen.getByLabelText('Password'), password);
  await user.click(screen.getByTestId('login-submit'));
}

describe('LoginPage', () => {
  it('signs in, keeps the CSRF token and goes to the overview', async () => {
    const f = routeFetch(
      on('POST', '/api/v1/auth/login', () => json({ user: { id: 'u1', email: 'ada@example.com', role: 'admin' }, csrf_token: 'tok' })),
    );
    render(<Harness />);
    await signIn('ada@example.com', 'correct horse');
    expect(await screen.findByText('overview for ada@example.com')).toBeInTheDocument();
    expect(JSON.parse(f.calls[0].init.body as string)).toEqual({ email: 'ada@example.com', password: 'correct horse' });
    expect(getCsrfToken()).toBe('tok');
  });

  it('returns to the page asked for before signing in', async () => {
    routeFetch(on('POST', '/api/v1/auth/login', () => json({ user: { id: 'u1', email: 'a@b.c', role: 'viewer' }, csrf_token: 't' })));
    render(<Harness route={`/login?next=${encodeURIComponent('/devices/d1')}`} />);
    await signIn('a@b.c', 'pw');
    expect(await screen.findByText('device page for viewer')).toBeInTheDocument();
  });

  it('shows the problem detail of wrong credentials and stays on the form', async () => {
    routeFetch(on('POST', '/api/v1/auth/login', () => problem(401, 'unauthorized', 'wrong e-mail or password')));
    render(<Harness />);
    await signIn('ada@example.com', 'nope');
    expect(await screen.findByRole('alert')).toHaveTextContent('wrong e-mail or password');
    expect(screen.getByTestId('login-submit')).toBeEnabled();
    expect(screen.getByLabelText('Password')).toHaveValue('nope');
  });

  it('explains a lockout', async () => {
    routeFetch(
      on('POST', '/api/v1/auth/login', () =>
        problem(429, 'too_many_requests', 'too many failed sign-ins; try again in 5m0s'),
      ),
    );
    render(<Harness />);
    await signIn('ada@example.com', 'nope');
    const alert = await screen.findByTestId('login-error');
    expect(alert).toHaveTextContent('Too many failed attempts');
    expect(alert).toHaveTextContent('try again in 5m0s');
  });

  it('explains a lockout that has only Retry-After', async () => {
    routeFetch(on('POST', '/api/v1/auth/login', () => new Response('', { status: 429, headers: { 'Retry-After': '300' } })));
    render(<Harness />);
    await signIn('ada@example.com', 'nope');
    expect(await screen.findByTestId('login-error')).toHaveTextContent(/locked|300/);
  });
});
