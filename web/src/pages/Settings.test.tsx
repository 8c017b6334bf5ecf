import { afterEach, describe, expect, it, vi } from 'vitest';
import { render, screen, waitFor, within, configure } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter, Route, Routes, useLocation } from 'react-router-dom';
import { SessionContext } from '../session';
import { SettingsPage } from './Settings';
import { json, routeFetch, session, type Reply } from '../test/routes';

function Where() {
  const l = useLocation();
  return <output data-testid="location">{l.pathname + l.search}</output>;
}

function renderAt(path = '/settings', role = 'admin') {
  return render(
    <SessionContext.Provider value={{ session: session(role), setSession: () => {} }}>
      <MemoryRouter initialEntries={[path]}>
        <Routes>
          <Route path="/settings" element={<SettingsPage />} />
        </Routes>
        <Where />
      </MemoryRouter>
    </SessionContext.Provider>,
  );
}

const users = [
  { id: 'u1', email: 'ada@example.com', role: 'admin', created_at: '2025-01-01T00:00:00Z' },
  { id: 'u2', email: 'bob@example.com', role: 'viewer', created_at: '2025-01-02T00:00:00Z' },
];

const keys = [{ id: 'k1', name: 'grafana', role: 'viewer', created_at: '2025-01-01T00:00:00Z' }];

const profiles = [
  { id: 'fridge', name: 'Fridge', telemetry: { temperature: { type: 'number' } }, commands: { defrost: {} } },
];

function routes(): Record<string, Reply> {
  return {
    'GET /api/v1/users': json(200, { users }),
    'GET /api/v1/api-keys': json(200, { api_keys: keys }),
    'GET /api/v1/profiles': json(200, { profiles }),
  };
}

// The machine running the tests may be busy: wait longer than the
// defaults before calling a test failed.
configure({ asyncUtilTimeout: 5000 });
vi.setConfig({ testTimeout: 30_000 });

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('SettingsPage tabs', () => {
  it('moves between tabs with the arrow keys, Home and End', async () => {
    routeFetch(routes());
    renderAt();
    const tablist = screen.getByRole('tablist', { name: 'Settings' });
    const tabs = within(tablist).getAllByRole('tab');
    expect(tabs.map((t) => t.textContent)).toEqual(['Users', 'API keys', 'Profiles', 'Password']);
    expect(tabs.map((t) => t.tabIndex)).toEqual([0, -1, -1, -1]);
    expect(tabs[0].getAttribute('aria-selected')).toBe('true');
    const panel = screen.getByRole('tabpanel');
    expect(panel.getAttribute('aria-labelledby')).toBe(tabs[0].id);
    expect(tabs[0].getAttribute('aria-controls')).toBe(panel.id);

    const user = userEvent.setup({ delay: null });
    await user.tab();
    expect(document.activeElement).toBe(tabs[0]);
    const steps: [string, string][] = [
      ['{ArrowRight}', 'API keys'],
      ['{ArrowRight}', 'Profiles'],
      ['{End}', 'Password'],
      ['{ArrowRight}', 'Users'],
      ['{ArrowLeft}', 'Password'],
      ['{Home}', 'Users'],
    ];
    for (const [key, want] of steps) {
      await user.keyboard(key);
      const selected = within(tablist).getByRole('tab', { selected: true });
      expect(selected.textContent).toBe(want);
      expect(document.activeElement).toBe(selected);
      expect(selected.tabIndex).toBe(0);
      expect(screen.getByRole('tabpanel').getAttribute('aria-labelledby')).toBe(selected.id);
    }
    // Tab leaves the tab list for the panel.
    await user.tab();
    expect(document.activeElement).toBe(screen.getByRole('tabpanel'));
  });

  it('opens the tab named in the address and keeps the choice there', async () => {
    routeFetch(routes());
    renderAt('/settings?tab=password');
    expect(screen.getByRole('tab', { selected: true }).textContent).toBe('Password');
    await userEvent.click(screen.getByRole('tab', { name: 'Profiles' }));
    expect(screen.getByTestId('location').textContent).toBe('/settings?tab=profiles');
    expect(await screen.findByText('Fridge')).toBeTruthy();
  });
});

describe('SettingsPage users', () => {
  it('invites a user after confirmation', async () => {
    const calls = routeFetch({
      ...routes(),
      'POST /api/v1/users': (c) => json(201, { id: 'u3', email: c.body.email, role: c.body.role, created_at: '2025-01-03T00:00:00Z' }),
    });
    renderAt();
    await screen.findAllByTestId('user-row');
    const user = userEvent.setup({ delay: null });
    await user.type(screen.getByLabelText('E-mail'), 'cy@example.com');
    await user.selectOptions(screen.getByLabelText('Role'), 'operator');
    await user.type(screen.getByLabelText('Initial password'), 'correct horse battery');
    await user.click(screen.getByRole('button', { name: 'Invite' }));
    expect(calls.some((c) => c.method === 'POST')).toBe(false);
    await user.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Invite' }));
    await waitFor(() => expect(screen.getAllByTestId('user-row')).toHaveLength(3));
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({
      email: 'cy@example.com',
      password: 'correct horse battery',
      role: 'operator',
    });
    expect(screen.getByText(/Invited cy@example.com as operator/)).toBeTruthy();
  });

  it('changes a role after confirmation, and not when cancelled', async () => {
    const calls = routeFetch({
      ...routes(),
      'PATCH /api/v1/users/u2': (c) => json(200, { ...users[1], ...c.body }),
    });
    renderAt();
    const select = (await screen.findByLabelText('Role of bob@example.com')) as HTMLSelectElement;
    const user = userEvent.setup({ delay: null });
    await user.selectOptions(select, 'admin');
    await user.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Cancel' }));
    expect(select.value).toBe('viewer');
    await user.selectOptions(select, 'operator');
    await user.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Change role' }));
    await waitFor(() => expect((screen.getByLabelText('Role of bob@example.com') as HTMLSelectElement).value).toBe('operator'));
    expect(calls.filter((c) => c.method === 'PATCH').map((c) => c.body)).toEqual([{ role: 'operator' }]);
    // The admin's own role cannot be changed from here.
    expect(screen.getByLabelText('Role of ada@example.com')).toHaveProperty('disabled', true);
  });

  it('deletes a user after confirmation', async () => {
    const calls = routeFetch({ ...routes(), 'DELETE /api/v1/users/u2': json(204) });
    renderAt();
    const user = userEvent.setup({ delay: null });
    await user.click(await screen.findByRole('button', { name: 'Delete bob@example.com' }));
    await user.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Delete' }));
    await waitFor(() => expect(screen.getAllByTestId('user-row')).toHaveLength(1));
    expect(calls.filter((c) => c.method === 'DELETE').map((c) => c.url)).toEqual(['/api/v1/users/u2']);
    expect(screen.getByRole('button', { name: 'Delete ada@example.com' })).toHaveProperty('disabled', true);
  });

  it('shows the server’s refusal as its problem detail', async () => {
    routeFetch({
      'GET /api/v1/users': json(403, { code: 'forbidden', detail: 'this needs the admin role' }, 'application/problem+json'),
    });
    renderAt();
    expect((await screen.findByRole('alert')).textContent).toContain('this needs the admin role');
  });

  it('does not offer user management to an operator', async () => {
    const calls = routeFetch(routes());
    renderAt('/settings', 'operator');
    expect(screen.getByText(/Only an admin can manage users/)).toBeTruthy();
    expect(calls.some((c) => c.url.startsWith('/api/v1/users'))).toBe(false);
  });
});

describe('SettingsPage API keys', () => {
  it('shows a new key’s secret once, with a copy button', async () => {
    const calls = routeFetch({
      ...routes(),
      'POST /api/v1/api-keys': (c) =>
        json(201, { api_key: { id: 'k2', name: c.body.name, role: c.body.role, created_at: '2025-01-03T00:00:00Z' }, key: 'tk_secret_123' }),
    });
    renderAt('/settings?tab=api-keys');
    await screen.findAllByTestId('api-key-row');
    // user-event puts a clipboard of its own in place.
    const user = userEvent.setup({ delay: null });
    const writeText = vi.spyOn(navigator.clipboard, 'writeText');
    await user.type(screen.getByLabelText('Name'), 'ci');
    await user.selectOptions(screen.getByLabelText('Role'), 'operator');
    await user.click(screen.getByRole('button', { name: 'Create key' }));

    const secret = await screen.findByTestId('api-key-secret');
    expect(secret.textContent).toBe('tk_secret_123');
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({ name: 'ci', role: 'operator' });
    expect(screen.getAllByTestId('api-key-row')).toHaveLength(2);
    await user.click(screen.getByRole('button', { name: 'Copy' }));
    expect(writeText).toHaveBeenCalledWith('tk_secret_123');
    expect(await screen.findByText('Copied to the clipboard.')).toBeTruthy();

    await user.click(screen.getByRole('button', { name: 'I have saved it' }));
    expect(screen.queryByTestId('api-key-secret')).toBeNull();
    expect(document.body.textContent).not.toContain('tk_secret_123');
    // Switching tabs and back does not bring it back either.
    await user.click(screen.getByRole('tab', { name: 'Users' }));
    await user.click(screen.getByRole('tab', { name: 'API keys' }));
    await screen.findAllByTestId('api-key-row');
    expect(document.body.textContent).not.toContain('tk_secret_123');
  });

  it('revokes a key after confirmation', async () => {
    const calls = routeFetch({ ...routes(), 'DELETE /api/v1/api-keys/k1': json(204) });
    renderAt('/settings?tab=api-keys');
    const user = userEvent.setup({ delay: null });
    await user.click(await screen.findByRole('button', { name: 'Revoke grafana' }));
    await user.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Revoke' }));
    await waitFor(() => expect(screen.queryAllByTestId('api-key-row')).toHaveLength(0));
    expect(calls.filter((c) => c.method === 'DELETE').map((c) => c.url)).toEqual(['/api/v1/api-keys/k1']);
  });
});

describe('SettingsPage profiles', () => {
  it('edits a profile as JSON and saves it with PUT', async () => {
    const calls = routeFetch({ ...routes(), 'PUT /api/v1/profiles/fridge': (c) => json(200, c.body) });
    renderAt('/settings?tab=profiles');
    const user = userEvent.setup({ delay: null });
    await user.click(await screen.findByRole('button', { name: 'Edit profile fridge' }));
    const editor = screen.getByTestId('profile-json') as HTMLTextAreaElement;
    expect(JSON.parse(editor.value)).toEqual(profiles[0]);
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"id": "fridge", "name": "Cold store", "report_interval": "30s"}');
    await user.click(screen.getByRole('button', { name: 'Save profile' }));
    expect(await screen.findByText('Saved profile fridge.')).toBeTruthy();
    expect(calls.find((c) => c.method === 'PUT')?.body).toEqual({ id: 'fridge', name: 'Cold store', report_interval: '30s' });
    expect(screen.getByText('Cold store')).toBeTruthy();
  });

  it('creates a profile with POST and refuses text that is not JSON', async () => {
    const calls = routeFetch({ ...routes(), 'POST /api/v1/profiles': (c) => json(201, c.body) });
    renderAt('/settings?tab=profiles');
    const user = userEvent.setup({ delay: null });
    await user.click(await screen.findByRole('button', { name: 'New profile' }));
    const editor = screen.getByTestId('profile-json') as HTMLTextAreaElement;
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"id": "arm"');
    await user.click(screen.getByRole('button', { name: 'Create profile' }));
    expect(screen.getByText(/Not JSON/)).toBeTruthy();
    expect(calls.some((c) => c.method === 'POST')).toBe(false);
    await user.clear(editor);
    await user.click(editor);
    await user.paste('{"id": "arm"}');
    await user.click(screen.getByRole('button', { name: 'Create profile' }));
    expect(await screen.findByText('Created profile arm.')).toBeTruthy();
    expect(calls.find((c) => c.method === 'POST')?.body).toEqual({ id: 'arm' });
  });

  it('shows profiles read-only to a viewer', async () => {
    routeFetch(routes());
    renderAt('/settings?tab=profiles', 'viewer');
    await userEvent.click(await screen.findByRole('button', { name: 'View profile fridge' }));
    expect(screen.getByTestId('profile-json')).toHaveProperty('readOnly', true);
    expect(screen.queryByRole('button', { name: 'Save profile' })).toBeNull();
    expect(screen.queryByRole('button', { name: 'New profile' })).toBeNull();
  });
});

describe('SettingsPage password', () => {
  it('changes the password when both new ones agree', async () => {
    const calls = routeFetch({ 'POST /api/v1/auth/password': json(204) });
    renderAt('/settings?tab=password', 'viewer');
    const user = userEvent.setup({ delay: null });
    await user.type(screen.getByLabelText('Current password'), 'old one');
    await user.type(screen.getByLabelText('New password'), 'new one!');
    await user.type(screen.getByLabelText('New password again'), 'new one?');
    await user.click(screen.getByRole('button', { name: 'Change password' }));
    expect(screen.getByText('The two new passwords differ.')).toBeTruthy();
    expect(calls).toHaveLength(0);
    await user.clear(screen.getByLabelText('New password again'));
    await user.type(screen.getByLabelText('New password again'), 'new one!');
    await user.click(screen.getByRole('button', { name: 'Change password' }));
    expect(await screen.findByText(/Password changed/)).toBeTruthy();
    expect(calls).toEqual([
      { method: 'POST', url: '/api/v1/auth/password', body: { current_password: 'old one', new_password: 'new one!' } },
    ]);
  });

  it('shows a wrong current password as the server said', async () => {
    routeFetch({
      'POST /api/v1/auth/password': json(401, { code: 'unauthorized', detail: 'the current password is wrong' }, 'application/problem+json'),
    });
    renderAt('/settings?tab=password', 'viewer');
    const user = userEvent.setup({ delay: null });
    await user.type(screen.getByLabelText('Current password'), 'nope');
    await user.type(screen.getByLabelText('New password'), 'new one!');
    await user.type(screen.getByLabelText('New password again'), 'new one!');
    await user.click(screen.getByRole('button', { name: 'Change password' }));
    expect((await screen.findByRole('alert')).textContent).toContain('the current password is wrong');
  });
});
