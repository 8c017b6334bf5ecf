// Routes of the dashboard. Every page but /login needs a session.
import { useEffect, useState } from 'react';
import { Navigate, Route, Routes, useLocation } from 'react-router-dom';
import { getSession, onUnauthorized, type Session } from './api';
import { SessionContext } from './session';
import { ErrorBanner, Spinner } from './ui';
import { Layout } from './Layout';
import { LoginPage } from './pages/Login';
import { OverviewPage } from './pages/Overview';
import { DevicesPage } from './pages/Devices';
import { DevicePage } from './pages/Device';
import { RulesPage } from './pages/Rules';
import { AlertsPage } from './pages/Alerts';
import { SettingsPage } from './pages/Settings';

/** The whole application, to be put inside a router. */
export function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let live = true;
    getSession()
      .then((s) => live && setSession(s))
      .catch((e: unknown) => live && setError(e))
      .finally(() => live && setLoading(false));
    const off = onUnauthorized(() => setSession(null));
    return () => {
      live = false;
      off();
    };
  }, []);

  if (loading) {
    return (
      <main className="center">
        <Spinner />
      </main>
    );
  }
  return (
    <SessionContext.Provider value={{ session, setSession }}>
      {error && !session ? <ErrorBanner error={error} /> : null}
      <Routes>
        <Route path="/login" element={<LoginPage />} />
        <Route element={<RequireSession session={session} />}>
          <Route path="/" element={<OverviewPage />} />
          <Route path="/devices" element={<DevicesPage />} />
          <Route path="/devices/:id" element={<DevicePage />} />
          <Route path="/rules" element={<RulesPage />} />
          <Route path="/rules/:id" element={<RulesPage />} />
          <Route path="/alerts" element={<AlertsPage />} />
          <Route path="/settings" element={<SettingsPage />} />
          <Route path="*" element={<NotFound />} />
        </Route>
      </Routes>
    </SessionContext.Provider>
  );
}

function RequireSession({ session }: { session: Session | null }) {
  const loc = useLocation();
  if (!session) {
    const next = loc.pathname + loc.search;
    return <Navigate to={next && next !== '/' ? `/login?next=${encodeURIComponent(next)}` : '/login'} replace />;
  }
  return <Layout />;
}

function NotFound() {
  return (
    <>
      <h1>Not found</h1>
      <p>There is no page at this address.</p>
    </>
  );
}
