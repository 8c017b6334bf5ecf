// Browser side of the end-to-end tests: finds Debian's Chromium, launches
// it through playwright-core (which downloads no browser), records console
// errors and page errors of every page, and saves screenshots under
// web/test-results/.

import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where Chromium is expected: env CHROMIUM_PATH, else Debian's /usr/bin/chromium. */
export const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const missingMessage = "browser tests need Debian's chromium package: apt-get install chromium";

/** Directory of the screenshots (and the server's log): env E2E_RESULTS_DIR, else web/test-results. */
export const resultsDir = process.env.E2E_RESULTS_DIR
  ? path.resolve(process.env.E2E_RESULTS_DIR)
  : path.resolve(here, '../test-results');

/**
 * skipReason says whether the browser tests can run: '' when Chromium is
 * there, else the message to skip with. In CI (env CI set) a missing
 * Chromium is an error, not a reason to skip.
 */
export function skipReason() {
  if (existsSync(chromiumPath)) return '';
  if (process.env.CI) {
    throw new Error(`${missingMessage} (${chromiumPath} is missing, and CI is set, so the browser tests must run)`);
  }
  return `${missingMessage} (${chromiumPath} is missing)`;
}

/** launch starts a headless Chromium with a fresh profile. */
export async function launch() {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (err) {
    throw new Error(`playwright-core is not installed: cd web && npm ci (${err.message})`);
  }
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // playwright-core adds --headless, --no-first-run and a temporary
    // --user-data-dir; the rest keeps Chromium quiet and working as root.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/**
 * watch records every console error and uncaught page error of page in
 * the returned list, as readable strings.
 */
export function watch(page) {
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const loc = msg.location();
    errors.push(`console error: ${msg.text()}${loc?.url ? ` (at ${loc.url}:${loc.lineNumber})` : ''}`);
  });
  page.on('pageerror', (err) => errors.push(`page error: ${err.stack || err.message}`));
  page.on('crash', () => errors.push('page crashed'));
  return errors;
}

/** screenshot saves a full-page PNG named after the test and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, name.replace(/[^a-zA-Z0-9._-]+/g, '-').replace(/^-|-$/g, '') + '.png');
  // From the top: a sticky header of a scrolled page would otherwise land
  // in the middle of the full-page image.
  await page.evaluate(() => window.scrollTo(0, 0)).catch(() => {});
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
