// The settings page: the tenant's users, API keys and device profiles,
// and the signed-in user's password, each on a tab. Admin-only actions
// are disabled for other roles, but the server decides: a refusal is
// shown as the problem it answered.
import { useCallback, useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent, type ReactNode } from 'react';
import { useSearchParams } from 'react-router-dom';
import { api, changePassword, roleAtLeast } from '../api';
import { useSession } from '../session';
import { Button, Card, ErrorBanner, Field, Modal, Spinner, Table, formatTime, type Column } from '../ui';

/** A user as the API answers it. */
export interface UserRecord {
  id: string;
  email: string;
  role: string;
  created_at?: string;
  last_login_at?: string;
  locked_until?: string;
}

/** An API key as the API answers it; its secret is never among it. */
export interface APIKeyRecord {
  id: string;
  name: string;
  role: string;
  created_at?: string;
  last_used_at?: string;
}

/** A device profile, kept as the JSON the API answers. */
export interface ProfileRecord {
  id: string;
  name?: string;
  [field: string]: unknown;
}

const roles = ['viewer', 'operator', 'admin'] as const;

const tabs = [
  { id: 'users', label: 'Users' },
  { id: 'api-keys', label: 'API keys' },
  { id: 'profiles', label: 'Profiles' },
  { id: 'password', label: 'Password' },
] as const;

type TabID = (typeof tabs)[number]['id'];

const buttonRow = { display: 'flex', flexWrap: 'wrap', gap: '0.5rem', marginTop: '0.75rem' } as const;
/** Fields side by side as far as they fit; buttons line up with the inputs. */
const formRow = { display: 'grid', gridTemplateColumns: 'repeat(auto-fit, minmax(min(100%, 11rem), 1fr))', gap: '0 0.75rem', alignItems: 'start' } as const;
// The top margin is a label's height (see .field label), so that the
// button lines up with the inputs beside it.
const formButton = { margin: '1.55rem 0 0.75rem', justifySelf: 'start' } as const;
const monospace = {
  fontFamily: 'var(--mono, ui-monospace, SFMono-Regular, Menlo, Consolas, monospace)',
  fontSize: '0.875rem',
  width: '100%',
} as const;

export function SettingsPage() {
  const [params, setParams] = useSearchParams();
  const current: TabID = tabs.find((t) => t.id === params.get('tab'))?.id ?? 'users';
  const refs = useRef<Record<string, HTMLButtonElement | null>>({});
  const base = useId();

  const select = (id: TabID, focus: boolean) => {
    const next = new URLSearchParams(params);
    next.set('tab', id);
    setParams(next, { replace: true });
    if (focus) refs.current[id]?.focus();
  };

  // Arrow keys move between the tabs (and show the tab), Home and End go
  // to the first and the last, as the ARIA tabs pattern has it.
  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>) => {
    const i = tabs.findIndex((t) => t.id === current);
    let j = -1;
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') j = (i + 1) % tabs.length;
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') j = (i - 1 + tabs.length) % tabs.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = tabs.length - 1;
    if (j < 0) return;
    e.preventDefault();
    select(tabs[j].id, true);
  };

  return (
    <>
      <h1>Settings</h1>
      <div
        role="tablist"
        aria-label="Settings"
        className="tabs"
        onKeyDown={onKeyDown}
        style={{ display: 'flex', flexWrap: 'wrap', gap: '0.25rem', borderBottom: '1px solid var(--border, #8884)', marginBottom: '1rem' }}
      >
        {tabs.map((t) => {
          const on = t.id === current;
          return (
            <button
              key={t.id}
              ref={(el) => {
                refs.current[t.id] = el;
              }}
              type="button"
              role="tab"
              id={`${base}-tab-${t.id}`}
              aria-selected={on}
              aria-controls={`${base}-panel-${t.id}`}
              tabIndex={on ? 0 : -1}
              data-testid={`settings-tab-${t.id}`}
              className={on ? 'tab active btn btn-secondary' : 'tab btn btn-link'}
              onClick={() => select(t.id, false)}
              style={on ? { fontWeight: 700, borderBottom: '2px solid currentColor' } : undefined}
            >
              {t.label}
            </button>
          );
        })}
      </div>
      <div role="tabpanel" id={`${base}-panel-${current}`} aria-labelledby={`${base}-tab-${current}`} tabIndex={0}>
        {current === 'users' ? <UsersTab /> : null}
        {current === 'api-keys' ? <APIKeysTab /> : null}
        {current === 'profiles' ? <ProfilesTab /> : null}
        {current === 'password' ? <PasswordTab /> : null}
      </div>
    </>
  );
}

/** A success message read out to screen readers. */
function Notice({ text, onDismiss }: { text: string; onDismiss?: () => void }) {
  return (
    <div role="status" aria-live="polite">
      {text ? (
        <div className="notice" style={{ display: 'flex', justifyContent: 'space-between', gap: '0.5rem', alignItems: 'center', marginBottom: '0.75rem' }}>
          <span>{text}</span>
          {onDismiss ? (
            <button type="button" className="btn btn-link" onClick={onDismiss} aria-label="Dismiss message">
              ×
            </button>
          ) : null}
        </div>
      ) : null}
    </div>
  );
}

/** A dialog that asks before doing something that cannot be undone. */
function Confirm({
  title,
  children,
  confirm,
  danger,
  onConfirm,
  onCancel,
}: {
  title: string;
  children: ReactNode;
  confirm: string;
  danger?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  return (
    <Modal title={title} onClose={onCancel}>
      {children}
      <div style={buttonRow}>
        <Button onClick={onCancel}>Cancel</Button>
        <Button variant={danger ? 'danger' : 'primary'} onClick={onConfirm}>
          {confirm}
        </Button>
      </div>
    </Modal>
  );
}

function AdminOnly({ what }: { what: string }) {
  return <p className="muted">Only an admin can manage {what}. Ask an admin of your tenant.</p>;
}

/** Loads a list once and on demand; null while loading. */
function useList<T>(path: string, field: string, enabled: boolean) {
  const [items, setItems] = useState<T[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = useCallback(async () => {
    try {
      const r = await api<Record<string, T[] | null>>(path);
      setItems(r[field] ?? []);
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [path, field]);
  useEffect(() => {
    if (enabled) void load();
  }, [enabled, load]);
  return { items, setItems, error, setError, load };
}

// ---- users -------------------------------------------------------------------

function UsersTab() {
  const { session } = useSession();
  const isAdmin = roleAtLeast(session?.user.role, 'admin');
  // A session of unknown role still asks: the server's answer is the truth.
  const ask = isAdmin || !session;
  const { items: users, setItems: setUsers, error, setError } = useList<UserRecord>('/api/v1/users', 'users', ask);
  const [notice, setNotice] = useState('');
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<string>('viewer');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState('');
  const [pending, setPending] = useState<
    | { kind: 'role'; user: UserRecord; role: string }
    | { kind: 'delete'; user: UserRecord }
    | { kind: 'password'; user: UserRecord }
    | { kind: 'invite' }
    | null
  >(null);
  const [newPassword, setNewPassword] = useState('');

  if (!ask) return <AdminOnly what="users" />;

  const invite = async () => {
    setPending(null);
    setBusy('invite');
    try {
      const u = await api<UserRecord>('/api/v1/users', { method: 'POST', body: { email, password, role } });
      setUsers((us) => [...(us ?? []), u]);
      setNotice(`Invited ${u.email} as ${u.role}. Give them the initial password; they can change it under Password.`);
      setEmail('');
      setPassword('');
      setRole('viewer');
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy('');
    }
  };

  const patch = async (u: UserRecord, body: { role?: string; password?: string }, done: string) => {
    setPending(null);
    setBusy(u.id);
    try {
      const r = await api<UserRecord | undefined>(`/api/v1/users/${encodeURIComponent(u.id)}`, { method: 'PATCH', body });
      const updated = r && r.id ? r : { ...u, ...(body.role ? { role: body.role } : {}) };
      setUsers((us) => us?.map((x) => (x.id === u.id ? updated : x)) ?? null);
      setNotice(done);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy('');
      setNewPassword('');
    }
  };

  const remove = async (u: UserRecord) => {
    setPending(null);
    setBusy(u.id);
    try {
      await api(`/api/v1/users/${encodeURIComponent(u.id)}`, { method: 'DELETE' });
      setUsers((us) => us?.filter((x) => x.id !== u.id) ?? null);
      setNotice(`Deleted ${u.email}.`);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy('');
    }
  };

  const me = session?.user.id;
  const columns: Column<UserRecord>[] = [
    { key: 'email', header: 'E-mail', render: (u) => (u.id === me ? `${u.email} (you)` : u.email) },
    {
      key: 'role',
      header: 'Role',
      render: (u) => (
        <select
          aria-label={`Role of ${u.email}`}
          value={u.role}
          disabled={busy !== '' || u.id === me}
          title={u.id === me ? 'You cannot change your own role' : undefined}
          onChange={(e) => setPending({ kind: 'role', user: u, role: e.target.value })}
        >
          {roles.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      ),
    },
    { key: 'created', header: 'Created', render: (u) => formatTime(u.created_at, false) },
    { key: 'login', header: 'Last sign-in', render: (u) => formatTime(u.last_login_at, false) },
    {
      key: 'locked',
      header: 'Locked until',
      render: (u) => (u.locked_until && new Date(u.locked_until).getTime() > Date.now() ? formatTime(u.locked_until) : '—'),
    },
    {
      key: 'actions',
      header: 'Actions',
      render: (u) => (
        <span style={{ display: 'flex', flexWrap: 'wrap', gap: '0.25rem' }}>
          <Button
            variant="link"
            disabled={busy !== ''}
            onClick={() => setPending({ kind: 'password', user: u })}
            aria-label={`Set the password of ${u.email}`}
          >
            Set password
          </Button>
          <Button
            variant="link"
            disabled={busy !== '' || u.id === me}
            onClick={() => setPending({ kind: 'delete', user: u })}
            aria-label={`Delete ${u.email}`}
          >
            Delete
          </Button>
        </span>
      ),
    },
  ];

  return (
    <>
      <Notice text={notice} onDismiss={() => setNotice('')} />
      <ErrorBanner error={error} onDismiss={() => setError(null)} />
      <Card title="Users">
        {users ? (
          <Table caption="Users" columns={columns} rows={users} rowKey={(u) => u.id} empty="No users." rowProps={(u) => ({ 'data-testid': 'user-row', 'data-user-id': u.id })} />
        ) : !error ? (
          <Spinner label="Loading users…" />
        ) : null}
      </Card>
      <Card title="Invite a user">
        <form
          onSubmit={(e: FormEvent) => {
            e.preventDefault();
            setPending({ kind: 'invite' });
          }}
        >
          <div style={formRow}>
            <Field label="E-mail">
              {(id) => <input id={id} type="email" required autoComplete="off" value={email} onChange={(e) => setEmail(e.target.value)} />}
            </Field>
            <Field label="Role">
              {(id) => (
                <select id={id} value={role} onChange={(e) => setRole(e.target.value)}>
                  {roles.map((r) => (
                    <option key={r} value={r}>
                      {r}
                    </option>
                  ))}
                </select>
              )}
            </Field>
            <PasswordField label="Initial password" value={password} onChange={setPassword} />
            <div style={formButton}>
              <Button type="submit" variant="primary" busy={busy === 'invite'} disabled={busy !== ''}>
                Invite
              </Button>
            </div>
          </div>
        </form>
      </Card>

      {pending?.kind === 'invite' ? (
        <Confirm title="Invite this user?" confirm="Invite" onConfirm={() => void invite()} onCancel={() => setPending(null)}>
          <p>
            {email} gets the role <strong>{role}</strong> and signs in with the initial password you chose.
          </p>
        </Confirm>
      ) : null}
      {pending?.kind === 'role' ? (
        <Confirm
          title="Change the role?"
          confirm="Change role"
          onConfirm={() => void patch(pending.user, { role: pending.role }, `${pending.user.email} is now ${pending.role}.`)}
          onCancel={() => setPending(null)}
        >
          <p>
            {pending.user.email} goes from <strong>{pending.user.role}</strong> to <strong>{pending.role}</strong>.
          </p>
        </Confirm>
      ) : null}
      {pending?.kind === 'delete' ? (
        <Confirm
          title="Delete this user?"
          confirm="Delete"
          danger
          onConfirm={() => void remove(pending.user)}
          onCancel={() => setPending(null)}
        >
          <p>{pending.user.email} can no longer sign in, and their sessions end.</p>
        </Confirm>
      ) : null}
      {pending?.kind === 'password' ? (
        <Modal title={`Set the password of ${pending.user.email}`} onClose={() => setPending(null)}>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void patch(pending.user, { password: newPassword }, `Set a new password for ${pending.user.email}.`);
            }}
          >
            <PasswordField label="New password" value={newPassword} onChange={setNewPassword} />
            <div style={buttonRow}>
              <Button onClick={() => setPending(null)}>Cancel</Button>
              <Button type="submit" variant="primary">
                Set password
              </Button>
            </div>
          </form>
        </Modal>
      ) : null}
    </>
  );
}

// ---- API keys ------------------------------------------------------------------

function APIKeysTab() {
  const { session } = useSession();
  const isAdmin = roleAtLeast(session?.user.role, 'admin');
  const ask = isAdmin || !session;
  const { items: keys, setItems: setKeys, error, setError } = useList<APIKeyRecord>('/api/v1/api-keys', 'api_keys', ask);
  const [name, setName] = useState('');
  const [role, setRole] = useState<string>('viewer');
  const [busy, setBusy] = useState('');
  const [secret, setSecret] = useState<{ name: string; key: string } | null>(null);
  const [copied, setCopied] = useState('');
  const [revoke, setRevoke] = useState<APIKeyRecord | null>(null);
  const [notice, setNotice] = useState('');
  const secretRef = useRef<HTMLElement>(null);

  if (!ask) return <AdminOnly what="API keys" />;

  const create = async (e: FormEvent) => {
    e.preventDefault();
    setBusy('create');
    try {
      const r = await api<{ api_key: APIKeyRecord; key: string }>('/api/v1/api-keys', { method: 'POST', body: { name, role } });
      setKeys((ks) => [...(ks ?? []), r.api_key]);
      setSecret({ name: r.api_key?.name ?? name, key: r.key });
      setCopied('');
      setNotice('');
      setName('');
      setRole('viewer');
      setError(null);
    } catch (err) {
      setError(err);
    } finally {
      setBusy('');
    }
  };

  const copy = async () => {
    if (!secret) return;
    try {
      await navigator.clipboard.writeText(secret.key);
      setCopied('Copied to the clipboard.');
    } catch {
      // No clipboard (an insecure origin): select the key for Ctrl+C.
      const el = secretRef.current;
      if (el) {
        const range = document.createRange();
        range.selectNodeContents(el);
        const sel = window.getSelection();
        sel?.removeAllRanges();
        sel?.addRange(range);
      }
      setCopied('Could not reach the clipboard; the key is selected, copy it with Ctrl+C.');
    }
  };

  const doRevoke = async (k: APIKeyRecord) => {
    setRevoke(null);
    setBusy(k.id);
    try {
      await api(`/api/v1/api-keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' });
      setKeys((ks) => ks?.filter((x) => x.id !== k.id) ?? null);
      setNotice(`Revoked ${k.name}.`);
      setError(null);
    } catch (err) {
      setError(err);
    } finally {
      setBusy('');
    }
  };

  const columns: Column<APIKeyRecord>[] = [
    { key: 'name', header: 'Name', render: (k) => k.name || k.id },
    { key: 'role', header: 'Role', render: (k) => k.role },
    { key: 'created', header: 'Created', render: (k) => formatTime(k.created_at, false) },
    { key: 'used', header: 'Last used', render: (k) => formatTime(k.last_used_at, false) },
    {
      key: 'actions',
      header: 'Actions',
      render: (k) => (
        <Button variant="link" disabled={busy !== ''} onClick={() => setRevoke(k)} aria-label={`Revoke ${k.name || k.id}`}>
          Revoke
        </Button>
      ),
    },
  ];

  return (
    <>
      <Notice text={notice} onDismiss={() => setNotice('')} />
      <ErrorBanner error={error} onDismiss={() => setError(null)} />
      {secret ? (
        <div className="secret" role="status" aria-live="polite" data-testid="api-key-secret-box" style={{ marginBottom: '1rem' }}>
          <div style={{ minWidth: 0 }}>
            <p>
              The secret of <strong>{secret.name}</strong>. It is shown only this once: copy it now.
            </p>
            <code ref={secretRef} data-testid="api-key-secret" className="secret-value" style={{ margin: '0.5rem 0' }}>
              {secret.key}
            </code>
            <div style={{ display: 'flex', flexWrap: 'wrap', gap: '0.5rem', alignItems: 'center' }}>
              <Button onClick={() => void copy()}>Copy</Button>
              <Button variant="primary" onClick={() => setSecret(null)}>
                I have saved it
              </Button>
              <span>{copied}</span>
            </div>
          </div>
        </div>
      ) : null}
      <Card title="API keys">
        {keys ? (
          <Table caption="API keys" columns={columns} rows={keys} rowKey={(k) => k.id} empty="No API keys." rowProps={(k) => ({ 'data-testid': 'api-key-row', 'data-key-id': k.id })} />
        ) : !error ? (
          <Spinner label="Loading API keys…" />
        ) : null}
      </Card>
      <Card title="Create an API key">
        <form onSubmit={(e) => void create(e)}>
          <div style={formRow}>
            <Field label="Name" hint="What the key is for, e.g. grafana">
              {(id, describedBy) => (
                <input id={id} aria-describedby={describedBy} required value={name} onChange={(e) => setName(e.target.value)} />
              )}
            </Field>
            <Field label="Role">
              {(id) => (
                <select id={id} value={role} onChange={(e) => setRole(e.target.value)}>
                  {roles.map((r) => (
                    <option key={r} value={r}>
                      {r}
                    </option>
                  ))}
                </select>
              )}
            </Field>
            <div style={formButton}>
              <Button type="submit" variant="primary" busy={busy === 'create'} disabled={busy !== ''}>
                Create key
              </Button>
            </div>
          </div>
        </form>
      </Card>
      {revoke ? (
        <Confirm title="Revoke this API key?" confirm="Revoke" danger onConfirm={() => void doRevoke(revoke)} onCancel={() => setRevoke(null)}>
          <p>Programs using {revoke.name || revoke.id} are refused from now on.</p>
        </Confirm>
      ) : null}
    </>
  );
}

// ---- profiles --------------------------------------------------------------------

const newProfile = `{
  "id": "my-profile",
  "name": "My profile",
  "report_interval": "1m",
  "telemetry": {
    "temperature": { "type": "number", "unit": "°C", "min": -40, "max": 125 }
  },
  "commands": {}
}`;

function ProfilesTab() {
  const { session } = useSession();
  const isAdmin = roleAtLeast(session?.user.role, 'admin') || !session;
  const { items: profiles, setItems: setProfiles, error, setError } = useList<ProfileRecord>('/api/v1/profiles', 'profiles', true);
  // editing: the ID of the profile in the editor, '' for a new one, null for none.
  const [editing, setEditing] = useState<string | null>(null);
  const [text, setText] = useState('');
  const [textError, setTextError] = useState('');
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState('');
  const [remove, setRemove] = useState<ProfileRecord | null>(null);

  const edit = (p: ProfileRecord | null) => {
    setEditing(p ? p.id : '');
    setText(p ? JSON.stringify(p, null, 2) : newProfile);
    setTextError('');
    setNotice('');
  };

  const save = async () => {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (e) {
      setTextError(`Not JSON: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      setTextError('A profile is a JSON object.');
      return;
    }
    setTextError('');
    setBusy(true);
    try {
      const p = editing
        ? await api<ProfileRecord>(`/api/v1/profiles/${encodeURIComponent(editing)}`, { method: 'PUT', body })
        : await api<ProfileRecord>('/api/v1/profiles', { method: 'POST', body });
      setProfiles((ps) => {
        const list = ps ?? [];
        return list.some((x) => x.id === p.id) ? list.map((x) => (x.id === p.id ? p : x)) : [...list, p];
      });
      setEditing(p.id);
      setText(JSON.stringify(p, null, 2));
      setNotice(editing ? `Saved profile ${p.id}.` : `Created profile ${p.id}.`);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const doRemove = async (p: ProfileRecord) => {
    setRemove(null);
    setBusy(true);
    try {
      await api(`/api/v1/profiles/${encodeURIComponent(p.id)}`, { method: 'DELETE' });
      setProfiles((ps) => ps?.filter((x) => x.id !== p.id) ?? null);
      if (editing === p.id) setEditing(null);
      setNotice(`Deleted profile ${p.id}.`);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const columns: Column<ProfileRecord>[] = [
    { key: 'id', header: 'ID', render: (p) => <code>{p.id}</code> },
    { key: 'name', header: 'Name', render: (p) => p.name || '—' },
    { key: 'keys', header: 'Telemetry keys', render: (p) => Object.keys((p.telemetry as object | undefined) ?? {}).length },
    { key: 'commands', header: 'Commands', render: (p) => Object.keys((p.commands as object | undefined) ?? {}).join(', ') || 'any' },
    {
      key: 'actions',
      header: 'Actions',
      render: (p) => (
        <span style={{ display: 'flex', flexWrap: 'wrap', gap: '0.25rem' }}>
          <Button variant="link" onClick={() => edit(p)} aria-label={`${isAdmin ? 'Edit' : 'View'} profile ${p.id}`}>
            {isAdmin ? 'Edit' : 'View'}
          </Button>
          {isAdmin ? (
            <Button variant="link" disabled={busy} onClick={() => setRemove(p)} aria-label={`Delete profile ${p.id}`}>
              Delete
            </Button>
          ) : null}
        </span>
      ),
    },
  ];

  return (
    <>
      <Notice text={notice} onDismiss={() => setNotice('')} />
      <ErrorBanner error={error} onDismiss={() => setError(null)} />
      <Card
        title="Device profiles"
        actions={
          isAdmin ? (
            <Button onClick={() => edit(null)} disabled={busy}>
              New profile
            </Button>
          ) : undefined
        }
      >
        {profiles ? (
          <Table caption="Profiles" columns={columns} rows={profiles} rowKey={(p) => p.id} empty="No profiles." />
        ) : !error ? (
          <Spinner label="Loading profiles…" />
        ) : null}
      </Card>
      {editing !== null ? (
        <Card title={editing ? `Profile ${editing}` : 'New profile'}>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void save();
            }}
          >
            <Field
              label="Profile (JSON)"
              hint="telemetry: the schema of each key; report_interval: when a device goes stale; commands: the commands its devices take."
              error={textError || undefined}
            >
              {(id, describedBy) => (
                <textarea
                  id={id}
                  data-testid="profile-json"
                  aria-describedby={describedBy}
                  aria-invalid={textError ? true : undefined}
                  readOnly={!isAdmin}
                  value={text}
                  onChange={(e) => setText(e.target.value)}
                  rows={16}
                  spellCheck={false}
                  style={monospace}
                />
              )}
            </Field>
            <div style={buttonRow}>
              <Button onClick={() => setEditing(null)}>Close</Button>
              {isAdmin ? (
                <Button type="submit" variant="primary" busy={busy}>
                  {editing ? 'Save profile' : 'Create profile'}
                </Button>
              ) : null}
            </div>
          </form>
        </Card>
      ) : null}
      {remove ? (
        <Confirm title="Delete this profile?" confirm="Delete" danger onConfirm={() => void doRemove(remove)} onCancel={() => setRemove(null)}>
          <p>The profile {remove.id} is deleted; the server refuses while devices still use it.</p>
        </Confirm>
      ) : null}
    </>
  );
}

// ---- password ---------------------------------------------------------------------

function PasswordTab() {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [again, setAgain] = useState('');
  const [mismatch, setMismatch] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (next !== again) {
      setMismatch('The two new passwords differ.');
      return;
    }
    setMismatch('');
    setBusy(true);
    try {
      await changePassword(current, next);
      setNotice('Password changed. Your other sessions were signed out.');
      setCurrent('');
      setNext('');
      setAgain('');
      setError(null);
    } catch (err) {
      setError(err);
      setNotice('');
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title="Change your password">
      <Notice text={notice} />
      <ErrorBanner error={error} onDismiss={() => setError(null)} />
      <form onSubmit={(e) => void submit(e)} style={{ maxWidth: '24rem' }}>
        <PasswordField label="Current password" autoComplete="current-password" value={current} onChange={setCurrent} />
        <PasswordField label="New password" value={next} onChange={setNext} />
        <PasswordField label="New password again" error={mismatch || undefined} value={again} onChange={setAgain} />
        <div style={buttonRow}>
          <Button type="submit" variant="primary" busy={busy}>
            Change password
          </Button>
        </div>
      </form>
    </Card>
  );
}

/** A required password input with its label; error marks it invalid. */
function PasswordField({
  label,
  value,
  onChange,
  autoComplete = 'new-password',
  error,
}: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  autoComplete?: string;
  error?: string;
}) {
  return (
    <Field label={label} error={error}>
      {(id, describedBy) => (
        <input
          id={id}
          type="password"
          required
          autoComplete={autoComplete}
          aria-describedby={describedBy}
          aria-invalid={error ? true : undefined}
          value={value}
          onChange={(e) => onChange(e.target.value)}
        />
      )}
    </Field>
  );
}
