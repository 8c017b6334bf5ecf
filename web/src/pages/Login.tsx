// The sign-in page.
import { useState, type FormEvent } from 'react';
import { Navigate, useNavigate, useSearchParams } from 'react-router-dom';
import { ApiError, login } from '../api';
import { useSession } from '../session';
import { Button, Field } from '../ui';

/** Turns a failed sign-in into a message for the form. */
export function loginMessage(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 401) return err.detail || 'wrong e-mail or password';
    if (err.status === 429) {
      const retry = Number(err.problem.retry_after);
      return err.detail && err.problem.detail
        ? `Too many failed attempts: ${err.detail}`
        : `Too many failed attempts; the account is locked for a while${retry ? ` (${retry} s)` : ''}. Try again later.`;
    }
    return err.detail || err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

export function LoginPage() {
  const { session, setSession } = useSession();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const next = safeNext(params.get('next'));

  if (session) return <Navigate to={next} replace />;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const s = await login(email.trim(), password);
      setSession(s);
      navigate(next, { replace: true });
    } catch (err) {
      setError(loginMessage(err));
      setBusy(false);
    }
  };

  return (
    <main className="login" id="main">
      <form className="card login-card" onSubmit={submit} aria-labelledby="login-title" noValidate>
        <h1 id="login-title">Sign in to Tether</h1>
        <div aria-live="assertive">
          {error ? (
            <p className="banner banner-error" role="alert" data-testid="login-error">
              {error}
            </p>
          ) : null}
        </div>
        <Field label="E-mail">
          {(id) => (
            <input
              id={id}
              type="email"
              autoComplete="username"
              required
              autoFocus
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              data-testid="login-email"
            />
          )}
        </Field>
        <Field label="Password">
          {(id) => (
            <input
              id={id}
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              data-testid="login-password"
            />
          )}
        </Field>
        <Button type="submit" variant="primary" busy={busy} data-testid="login-submit" disabled={!email || !password}>
          Sign in
        </Button>
      </form>
    </main>
  );
}

// safeNext keeps a post-login redirect on this site.
function safeNext(next: string | null): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/login')) return '/';
  return next;
}
