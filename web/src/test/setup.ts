// Test setup: jsdom stand-ins for WebSocket and uPlot, a clean DOM between
// tests, and a failure for any test that logs a console error or warning
// (React key warnings, act() warnings, ...).
import '@testing-library/jest-dom/vitest';
import { afterEach, beforeEach, vi } from 'vitest';
import { cleanup } from '@testing-library/react';
import { FakeUPlot, FakeWebSocket } from './fakes';
import { setCsrfToken } from '../api';

vi.mock('uplot', () => ({ default: FakeUPlot }));

let logged: string[] = [];

beforeEach(() => {
  logged = [];
  FakeWebSocket.instances = [];
  FakeUPlot.instances = [];
  vi.stubGlobal('WebSocket', FakeWebSocket);
  for (const level of ['error', 'warn'] as const) {
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      logged.push(`console.${level}: ${args.map(String).join(' ')}`);
    });
  }
});

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
  vi.useRealTimers();
  setCsrfToken('');
  const msgs = logged;
  logged = [];
  if (msgs.length) throw new Error(`unexpected console output:\n${msgs.join('\n')}`);
});
