import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter } from 'react-router-dom';
import { describe, expect, it } from 'vitest';
import { App } from './App';
import { json, on, problem, routeFetch } from './test/fakes';

const sessionBody = { user: { id: 'u1', email: 'ada@example.com', role: 'operator', tenant_id: 'default' }, csrf_token: 'csrf-9' };

function renderApp(route: string) {
  return render(
    <MemoryRouter initialEntries={[route]}>
      <App />
    </MemoryRouter>,
  );
}

const quietOverview = [
  on('GET', '/api/v1/fleet', () => json({ devices: { total: 0, online: 0, stale: 0, offline: 0 }, alerts: { active: 0 }, messages: { received: 0, points: 0 }, time: new Date().toISOString() })),
  on('GET', '/api/v1/alerts', () => json({ alerts: [] })),
];

describe('App', () => {
  it('sends a visitor without a session to the sign-in page, remembering the page', async () => {
    routeFetch(on('GET', '/api/v1/auth/session', () => problem(401, 'unauthorized', 'not signed in')));
    renderApp('/devices/d1');
    expect(await screen.findByRole('heading', { name: 'Sign in to Tether' })).toBeInTheDocument();
  });

  it('shows the navigation, the role and signs out', async () => {
    const f = routeFetch(
      on('GET', '/api/v1/auth/session', () => json(sessionBody)),
      on('POST', '/api/v1/auth/logout', () => json(undefined, 204)),
      ...quietOverview,
    );
    const user = userEvent.setup();
    renderApp('/');
    expect(await screen.findByRole('heading', { name: 'Fleet overview' })).toBeInTheDocument();
    for (const id of ['overview', 'devices', 'rules', 'alerts', 'settings']) {
      expect(screen.getByTestId(`nav-${id}`)).toBeInTheDocument();
    }
    expect(screen.getByTestId('nav-overview')).toHaveAttribute('aria-current', 'page');
    expect(screen.getByRole('link', { name: 'Skip to content' })).toHaveAttribute('href', '#main');

    await user.click(screen.getByRole('button', { name: 'ada@example.com' }));
    expect(screen.getByTestId('user-role')).toHaveTextContent('operator');
    await user.click(screen.getByRole('button', { name: 'Sign out' }));
    expect(await screen.findByRole('heading', { name: 'Sign in to Tether' })).toBeInTheDocument();
    const out = f.calls.find((c) => c.url.pathname === '/api/v1/auth/logout')!;
    expect((out.init.headers as Record<string, string>)['X-CSRF-Token']).toBe('csrf-9');
  });

  it('closes the user menu with Escape and puts focus back on its button', async () => {
    routeFetch(on('GET', '/api/v1/auth/session', () => json(sessionBody)), ...quietOverview);
    const user = userEvent.setup();
    renderApp('/');
    const button = await screen.findByRole('button', { name: 'ada@example.com' });
    await user.click(button);
    expect(button).toHaveAttribute('aria-expanded', 'true');
    await user.keyboard('{Escape}');
    expect(button).toHaveAttribute('aria-expanded', 'false');
    expect(button).toHaveFocus();
    expect(screen.queryByRole('button', { name: 'Sign out' })).toBeNull();
  });

  it('opens and closes the menu with its button', async () => {
    routeFetch(on('GET', '/api/v1/auth/session', () => json(sessionBody)), ...quietOverview);
    const user = userEvent.setup();
    renderApp('/');
    const button = await screen.findByRole('button', { name: 'Menu' });
    expect(button).toHaveAttribute('aria-expanded', 'false');
    await user.click(button);
    expect(button).toHaveAttribute('aria-expanded', 'true');
    expect(document.getElementById('main-nav')).toHaveClass('open');
    await user.click(screen.getByTestId('nav-rules'));
    await waitFor(() => expect(button).toHaveAttribute('aria-expanded', 'false'));
  });

  it('changes the password', async () => {
    const f = routeFetch(
      on('GET', '/api/v1/auth/session', () => json(sessionBody)),
      on('POST', '/api/v1/auth/password', () => json(undefined, 204)),
      ...quietOverview,
    );
    const user = userEvent.setup();
    renderApp('/');
    await user.click(await screen.findByRole('button', { name: 'ada@example.com' }));
    await user.click(screen.getByRole('button', { name: 'Change password' }));
    await user.type(screen.getByLabelText('Current password'), 'old-password');
    await user.type(screen.getByLabelText('New password'), 'new-password-1');
    await user.type(screen.getByLabelText('Repeat new password'), 'new-password-1');
    await user.click(screen.getAllByRole('button', { name: 'Change password' }).at(-1)!);
    expect(await screen.findByText(/Password changed/)).toBeInTheDocument();
    const call = f.calls.find((c) => c.url.pathname === '/api/v1/auth/password')!;
    expect(JSON.parse(call.init.body as string)).toEqual({ current_password: 'old-password', new_password: 'new-password-1' });
  });

  it('returns to the sign-in page when the session ends', async () => {
    routeFetch(
      on('GET', '/api/v1/auth/session', () => json(sessionBody)),
      on('GET', '/api/v1/fleet', () => problem(401, 'unauthorized', 'the session expired')),
      on('GET', '/api/v1/alerts', () => problem(401, 'unauthorized', 'the session expired')),
    );
    renderApp('/');
    expect(await screen.findByRole('heading', { name: 'Sign in to Tether' })).toBeInTheDocument();
  });
});
