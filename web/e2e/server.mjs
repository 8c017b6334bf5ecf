// Starts a real `tether serve --demo` on random loopback ports for the
// browser tests, and stops it afterwards. It builds nothing: the binary
// comes from env TETHER_BIN, by default bin/tether at the repository root
// (`make build` writes it, with the dashboard embedded).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Path of the tether binary under test. */
export const tetherBin = process.env.TETHER_BIN
  ? path.resolve(process.env.TETHER_BIN)
  : path.resolve(here, '../../bin/tether');

export const adminEmail = 'admin@example.test';

/**
 * startDemo runs `tether serve --demo` over a fresh data directory and
 * resolves once /healthz answers. The result carries the base URL, the
 * bootstrap admin's e-mail and password, an admin API key for checks over
 * the REST API, api() to call it, logs() for what the server printed, and
 * stop() to end it.
 */
export async function startDemo({ startTimeoutMs = 60_000 } = {}) {
  if (!existsSync(tetherBin)) {
    throw new Error(`tether binary ${tetherBin} is missing: run make build (or set TETHER_BIN)`);
  }
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tether-e2e-'));
  const password = 'pw-' + randomBytes(12).toString('base64url');
  const apiKey = 'e2e-admin-key-' + randomBytes(24).toString('hex');
  const args = [
    'serve', '--demo',
    '--data-dir', dataDir,
    '--http-addr', '127.0.0.1:0',
    '--mqtt-addr', '127.0.0.1:0',
    '--coap-addr', '127.0.0.1:0',
    '--coaps-addr', '',
    '--mqtt-ws-addr', '',
    '--log-format', 'json',
  ];
  const child = spawn(tetherBin, args, {
    env: {
      ...process.env,
      TETHER_BOOTSTRAP_ADMIN_EMAIL: adminEmail,
      TETHER_BOOTSTRAP_ADMIN_PASSWORD: password,
      TETHER_BOOTSTRAP_ADMIN_KEY: apiKey,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  // Keep the last lines of output for failure messages.
  const lines = [];
  const keep = (chunk) => {
    for (const l of chunk.toString().split('\n')) {
      if (l !== '') lines.push(l);
    }
    if (lines.length > 400) lines.splice(0, lines.length - 400);
  };
  let exited = null;
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  const logs = () => lines.join('\n');
  // Should the test process end without stop(), take the server along.
  const reap = () => {
    if (!exited) child.kill('SIGKILL');
  };
  process.on('exit', reap);

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!exited) child.kill('SIGKILL');
      }, 15_000);
      await exit;
      clearTimeout(timer);
    }
    process.off('exit', reap);
    rmSync(dataDir, { recursive: true, force: true });
  };

  let base = '';
  try {
    base = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`tether did not print its REST API address in ${startTimeoutMs} ms:\n${logs()}`)),
        startTimeoutMs,
      );
      // The welcome text on stdout has a line like
      //   REST API: http://127.0.0.1:PORT/api/v1  (OpenAPI: ...)
      let stdout = '';
      child.stdout.on('data', (chunk) => {
        keep(chunk);
        if (stdout === null) return;
        stdout += chunk.toString();
        const m = /REST API:\s+(http:\/\/[^\s/]+)\/api\/v1/.exec(stdout);
        if (m) {
          stdout = null;
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.stderr.on('data', keep);
      exit.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`tether exited (code ${code}, signal ${signal}) before it started:\n${logs()}`));
      });
    });
    await waitFor(
      async () => {
        if (exited) throw new Error(`tether exited (code ${exited.code}):\n${logs()}`);
        const r = await fetch(base + '/healthz').catch(() => null);
        return r?.ok;
      },
      { timeoutMs: startTimeoutMs, what: 'GET /healthz to answer 200' },
    );
  } catch (err) {
    await stop();
    throw err;
  }

  /** api calls the REST API with the admin API key and returns the parsed JSON. */
  const api = async (p, { method = 'GET', body } = {}) => {
    const r = await fetch(base + p, {
      method,
      headers: {
        Authorization: 'Bearer ' + apiKey,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
    return text === '' ? undefined : JSON.parse(text);
  };

  return { url: base, email: adminEmail, password, apiKey, dataDir, api, logs, stop };
}

/**
 * waitFor polls fn until it returns a truthy value (which it resolves to)
 * or timeoutMs passes; errors thrown by fn end the wait at once.
 */
export async function waitFor(fn, { timeoutMs = 20_000, intervalMs = 250, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
