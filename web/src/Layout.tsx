// The frame around every signed-in page: skip link, navigation (a menu
// button under 640 px), the user menu and the page itself.
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { Link, NavLink, Outlet, useLocation, useNavigate } from 'react-router-dom';
import { changePassword, logout } from './api';
import { useSession } from './session';
import { Button, ErrorBanner, Field, Modal } from './ui';

const links = [
  { to: '/', label: 'Overview', id: 'overview', end: true },
  { to: '/devices', label: 'Devices', id: 'devices', end: false },
  { to: '/rules', label: 'Rules', id: 'rules', end: false },
  { to: '/alerts', label: 'Alerts', id: 'alerts', end: false },
  { to: '/settings', label: 'Settings', id: 'settings', end: false },
];

export function Layout() {
  const { session, setSession } = useSession();
  const [navOpen, setNavOpen] = useState(false);
  const [userOpen, setUserOpen] = useState(false);
  const [pwOpen, setPwOpen] = useState(false);
  const loc = useLocation();
  const navigate = useNavigate();

  // A new page: close the menus and move focus to the page, so that a
  // keyboard or screen reader user starts reading it rather than the nav.
  const first = useRef(true);
  useEffect(() => {
    setNavOpen(false);
    setUserOpen(false);
    if (first.current) {
      first.current = false;
      return;
    }
    document.getElementById('main')?.focus({ preventScroll: false });
  }, [loc.pathname]);

  // The user menu closes on Escape (focus back on its button) and on a
  // click elsewhere.
  const userMenu = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!userOpen) return;
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') {
        setUserOpen(false);
        userMenu.current?.querySelector('button')?.focus();
      }
    };
    const onClick = (e: MouseEvent) => {
      if (!userMenu.current?.contains(e.target as Node)) setUserOpen(false);
    };
    document.addEventListener('keydown', onKey);
    document.addEventListener('mousedown', onClick);
    return () => {
      document.removeEventListener('keydown', onKey);
      document.removeEventListener('mousedown', onClick);
    };
  }, [userOpen]);

  const signOut = async () => {
    try {
      await logout();
    } catch {
      // Signed out locally either way.
    }
    setSession(null);
    navigate('/login', { replace: true });
  };

  return (
    <div className="app">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link className="brand" to="/">
          Tether
        </Link>
        <button
          type="button"
          className="btn btn-secondary menu-button"
          aria-expanded={navOpen}
          aria-controls="main-nav"
          onClick={() => setNavOpen((o) => !o)}
        >
          Menu
        </button>
        <nav id="main-nav" aria-label="Main" className={navOpen ? 'nav open' : 'nav'}>
          <ul>
            {links.map((l) => (
              <li key={l.to}>
                <NavLink to={l.to} end={l.end} data-testid={`nav-${l.id}`}>
                  {l.label}
                </NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <div className="user-menu" ref={userMenu}>
          <button
            type="button"
            className="btn btn-secondary"
            aria-expanded={userOpen}
            aria-controls="user-menu-panel"
            onClick={() => setUserOpen((o) => !o)}
          >
            <span className="user-email">{session?.user.email ?? 'Account'}</span>
          </button>
          {userOpen ? (
            <div id="user-menu-panel" className="user-panel">
              <p>
                Signed in as <strong>{session?.user.email}</strong>
                <br />
                Role: <strong data-testid="user-role">{session?.user.role}</strong>
              </p>
              <Button onClick={() => { setUserOpen(false); setPwOpen(true); }}>Change password</Button>
              <Button variant="danger" onClick={signOut}>
                Sign out
              </Button>
            </div>
          ) : null}
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
      {pwOpen ? <ChangePassword onClose={() => setPwOpen(false)} /> : null}
    </div>
  );
}

function ChangePassword({ onClose }: { onClose: () => void }) {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [confirm, setConfirm] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (next !== confirm) {
      setError(new Error('the new passwords do not match'));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await changePassword(current, next);
      setDone(true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal title="Change password" onClose={onClose}>
      {done ? (
        <>
          <p role="status">Password changed. Your other sessions were signed out.</p>
          <div className="row-actions">
            <Button variant="primary" onClick={onClose}>
              Close
            </Button>
          </div>
        </>
      ) : (
        <form onSubmit={submit}>
          <ErrorBanner error={error} />
          <Field label="Current password">
            {(id) => <input id={id} type="password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.target.value)} />}
          </Field>
          <Field label="New password">
            {(id) => <input id={id} type="password" autoComplete="new-password" required value={next} onChange={(e) => setNext(e.target.value)} />}
          </Field>
          <Field label="Repeat new password">
            {(id) => <input id={id} type="password" autoComplete="new-password" required value={confirm} onChange={(e) => setConfirm(e.target.value)} />}
          </Field>
          <div className="row-actions">
            <Button onClick={onClose}>Cancel</Button>
            <Button type="submit" variant="primary" busy={busy}>
              Change password
            </Button>
          </div>
        </form>
      )}
    </Modal>
  );
}
