// The signed-in session, shared through React context.
import { createContext, useContext } from 'react';
import type { Session } from './api';

export interface SessionState {
  session: Session | null;
  setSession: (s: Session | null) => void;
}

export const SessionContext = createContext<SessionState>({ session: null, setSession: () => {} });

/** The current session state. */
export function useSession(): SessionState {
  return useContext(SessionContext);
}

/** The signed-in user's role, or '' when signed out. */
export function useRole(): string {
  return useContext(SessionContext).session?.user.role ?? '';
}
