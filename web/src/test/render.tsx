// Renders a page inside a router and a signed-in session.
import { render } from '@testing-library/react';
import type { ReactElement } from 'react';
import { MemoryRouter, Route, Routes } from 'react-router-dom';
import type { Session } from '../api';
import { SessionContext } from '../session';

export function session(role = 'admin'): Session {
  return { user: { id: 'u1', email: 'ada@example.com', role, tenant_id: 'default' }, csrf_token: 'csrf-1' };
}

export function renderPage(element: ReactElement, { path = '/', route = '/', role = 'admin' } = {}) {
  const s = session(role);
  return render(
    <SessionContext.Provider value={{ session: s, setSession: () => {} }}>
      <MemoryRouter initialEntries={[route]}>
        <Routes>
          <Route path={path} element={element} />
        </Routes>
      </MemoryRouter>
    </SessionContext.Provider>,
  );
}
