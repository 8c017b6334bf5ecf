// End-to-end tests of the dashboard: Debian's Chromium, driven by
// playwright-core, against a real `tether serve --demo` on random ports.
// One server and one browser serve the whole file; every test opens its
// own page, fails on any console error or uncaught page error, and saves a
// screenshot under web/test-results/.
//
// Run: make build && make browser-test (or scripts/browser-test.sh, or
// cd web && node --test e2e/). Environment: TETHER_BIN (the binary, by
// default bin/tether), CHROMIUM_PATH (by default /usr/bin/chromium; when
// it is missing the tests skip, or fail if CI is set), E2E_RESULTS_DIR
// (by default web/test-results: screenshots and tether.log, the server's
// output).

import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launch, resultsDir, screenshot, skipReason, watch } from './browser.mjs';
import { startDemo, waitFor } from './server.mjs';

// skip is the reason to skip every test ('' to run them); fatal, when
// set, fails every test instead (Chromium missing in CI).
let skip = '';
let fatal = null;
try {
  skip = skipReason();
  if (skip) console.log(`# ${skip}`);
} catch (err) {
  fatal = err;
}

let server; // from startDemo
let browser;
let context; // desktop context, shared so that one sign-in serves all tests
let thermostat; // id of a demo thermostat

const desktop = { viewport: { width: 1280, height: 900 } };
const phone = { viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

before(async () => {
  if (skip || fatal) return;
  server = await startDemo();
  browser = await launch();
  context = await browser.newContext({ ...desktop, baseURL: server.url });
  context.setDefaultTimeout(20_000);
});

after(async () => {
  await browser?.close();
  if (server) {
    await server.stop();
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(path.join(resultsDir, 'tether.log'), server.logs() + '\n');
  }
});

/**
 * browserTest declares a test that gets a fresh page of ctx() (the shared
 * desktop context unless given), fails on console errors, and saves a
 * screenshot named after the test whether it passes or not. fn gets the
 * page, the test context and the list of errors recorded so far.
 */
function browserTest(name, fn, { ctx = () => context, timeout = 120_000 } = {}) {
  test(name, { skip: skip || false, timeout }, async (t) => {
    if (fatal) throw fatal;
    const page = await (await ctx()).newPage();
    const errors = watch(page);
    try {
      await fn(page, t, errors);
    } finally {
      const file = await screenshot(page, name).catch((err) => `(no screenshot: ${err.message})`);
      t.diagnostic(`screenshot: ${file}`);
      await page.close().catch(() => {});
    }
    assert.deepEqual(errors, [], `the page logged errors:\n${errors.join('\n')}`);
  });
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** login signs in through the login form and waits to leave /login. */
async function login(page) {
  await page.goto('/login');
  await byTestId(page, 'login-email').fill(server.email);
  await byTestId(page, 'login-password').fill(server.password);
  await byTestId(page, 'login-submit').click();
  await page.waitForURL((u) => !u.pathname.startsWith('/login'));
}

/**
 * signedIn opens path, signing in first if the dashboard asks to. (The
 * navigation is only attached, not visible, at phone width, where it
 * hides behind the menu button.)
 */
async function signedIn(page, to = '/') {
  await page.goto(to);
  await page.waitForFunction(
    () => document.querySelector('[data-testid="nav-overview"]') || document.querySelector('[data-testid="login-email"]'),
  );
  if (await byTestId(page, 'login-email').count()) {
    await login(page);
    if (new URL(page.url()).pathname !== to) await page.goto(to);
  }
  await byTestId(page, 'nav-overview').waitFor({ state: 'attached' });
}

/** count reads the first whole number in a locator's text. */
async function count(locator) {
  const text = (await locator.textContent()) ?? '';
  const m = /\d[\d,. ]*/.exec(text);
  return m ? Number(m[0].replace(/[^\d]/g, '')) : NaN;
}

/** demoThermostat finds a demo thermostat over the REST API. */
async function demoThermostat() {
  if (thermostat) return thermostat;
  const body = await waitFor(
    async () => {
      // Online, so that it answers commands.
      const b = await server.api('/api/v1/devices?profile=thermostat&status=online&limit=50');
      return b.devices?.length ? b : null;
    },
    { timeoutMs: 30_000, what: 'an online demo device of profile thermostat' },
  );
  thermostat = body.devices[0].id;
  return thermostat;
}

/** openDevice goes from the device list to the page of device id. */
async function openDevice(page, id) {
  await signedIn(page, '/');
  await byTestId(page, 'nav-devices').click();
  const search = byTestId(page, 'device-search');
  await search.waitFor();
  await search.fill(id);
  const row = page.locator(`[data-testid="device-row"][data-device-id="${id}"]`);
  await row.waitFor();
  const link = row.getByRole('link').first();
  await ((await link.count()) ? link : row).click();
  await page.waitForURL((u) => u.pathname === `/devices/${encodeURIComponent(id)}`);
}

/**
 * latestValues reads every latest-value of the device page, by key: the
 * value shown, without its "3 s ago" (which changes on its own).
 */
async function latestValues(page) {
  return page.locator('[data-testid="latest-value"]').evaluateAll((els) =>
    Object.fromEntries(
      els.map((e) => {
        const c = e.cloneNode(true);
        for (const t of c.querySelectorAll('time')) t.remove();
        return [e.getAttribute('data-key'), c.textContent?.replace(/\s+/g, ' ').trim() ?? ''];
      }),
    ),
  );
}

/** noErrorBanner fails if the page shows an error banner. */
async function noErrorBanner(page) {
  const banners = await page.locator('.banner-error:visible').allTextContents();
  assert.deepEqual(banners, [], `the page shows an error: ${banners.join('; ')}`);
}

/** noHorizontalOverflow fails if the page is wider than the phone screen. */
async function noHorizontalOverflow(page, width) {
  const { scroll, culprits } = await page.evaluate((w) => {
    const scroll = document.documentElement.scrollWidth;
    const culprits = [];
    if (scroll > w + 1) {
      // Name the innermost elements that stick out.
      const over = (el) => el.getBoundingClientRect().right > w + 1;
      for (const el of document.querySelectorAll('body *')) {
        if (culprits.length >= 5) break;
        if (!over(el) || [...el.children].some(over)) continue;
        const cls = typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\s+/).join('.') : '';
        const r = Math.round(el.getBoundingClientRect().right);
        culprits.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${cls} (right edge ${r} px)`);
      }
    }
    return { scroll, culprits };
  }, width);
  assert.ok(scroll <= width + 1, `the page is ${scroll} px wide at a ${width} px screen; too wide: ${culprits.join(', ')}`);
}

browserTest('login shows the overview with devices online', async (page) => {
  await page.goto('/');
  // Signed out, the dashboard sends us to the login page.
  await page.waitForURL((u) => u.pathname === '/login');
  await login(page);
  assert.equal(new URL(page.url()).pathname, '/');
  const online = byTestId(page, 'fleet-online');
  await online.waitFor();
  // The demo's devices connect within seconds of the start.
  await waitFor(async () => (await count(online)) > 0, {
    timeoutMs: 30_000,
    what: 'fleet-online to count more than 0 devices',
  });
  for (const id of ['fleet-offline', 'fleet-stale', 'fleet-alerts']) {
    await byTestId(page, id).waitFor();
  }
  // The message rate needs two reads of the counters, a few seconds apart.
  const rate = byTestId(page, 'fleet-rate');
  await waitFor(async () => Number(((await rate.textContent()) ?? '').replace(/[^\d.]/g, '')) > 0, {
    timeoutMs: 20_000,
    what: 'fleet-rate to show messages per second above 0',
  });
  await noErrorBanner(page);
});

browserTest('a demo device shows live values that change', async (page) => {
  const id = await demoThermostat();
  await openDevice(page, id);
  await byTestId(page, 'latest-value').first().waitFor();
  await byTestId(page, 'live-chart').waitFor();
  const first = await latestValues(page);
  assert.ok(Object.keys(first).length > 0, 'no latest-value on the device page');
  // The simulator sends telemetry every second; some value must move.
  await waitFor(
    async () => {
      const now = await latestValues(page);
      return Object.keys(now).some((k) => k in first && now[k] !== first[k]);
    },
    { timeoutMs: 20_000, what: `a latest-value to change from ${JSON.stringify(first)}` },
  );
  // And the live chart grows.
  const chart = byTestId(page, 'live-chart');
  const points = Number(await chart.getAttribute('data-points'));
  await waitFor(async () => Number(await chart.getAttribute('data-points')) > points, {
    what: `live-chart to draw more than its ${points} points`,
  });
  await chart.locator('canvas').first().waitFor();
  await noErrorBanner(page);
});

browserTest('the device history renders for a chosen range', async (page) => {
  const id = await demoThermostat();
  await signedIn(page, `/devices/${encodeURIComponent(id)}`);
  const range = byTestId(page, 'history-range');
  await range.waitFor();
  const options = await range.locator('option').evaluateAll((os) => os.map((o) => o.value));
  assert.ok(options.length > 1, `history-range offers ${options.length} options`);
  const chart = byTestId(page, 'history-chart');
  // The default range loads first; then choose another.
  await waitFor(async () => Number(await chart.getAttribute('data-points')) > 0, {
    what: 'history-chart to draw the default range',
  });
  const current = await range.inputValue();
  const pick = options.find((v) => v !== current);
  // Choosing a range queries the device's stored telemetry.
  const [res] = await Promise.all([
    page.waitForResponse((r) => /\/api\/v1\/devices\/[^/]+\/telemetry\?/.test(r.url())),
    range.selectOption(pick),
  ]);
  assert.equal(res.status(), 200, `the history query ${res.url()} answered ${res.status()}`);
  await chart.locator('canvas').first().waitFor();
  await waitFor(async () => Number(await chart.getAttribute('data-points')) > 0, {
    what: 'history-chart to draw some points',
  });
  const box = await chart.locator('canvas').first().boundingBox();
  assert.ok(box && box.width > 0 && box.height > 0, `the history canvas is not visible: ${JSON.stringify(box)}`);
  await noErrorBanner(page);
});

browserTest('a command to a device gets its reply', async (page) => {
  const id = await demoThermostat();
  await signedIn(page, `/devices/${encodeURIComponent(id)}`);
  const name = byTestId(page, 'command-name');
  await name.waitFor();
  if ((await name.evaluate((e) => e.tagName)) === 'SELECT') {
    await name.selectOption('set_mode');
  } else {
    await name.fill('set_mode');
  }
  await byTestId(page, 'command-params').fill('{"mode":"cool"}');
  await byTestId(page, 'command-send').click();
  const status = byTestId(page, 'command-status');
  await waitFor(async () => /succeeded/i.test((await status.textContent().catch(() => '')) ?? ''), {
    timeoutMs: 30_000,
    what: 'command-status to read succeeded',
  });
  const reply = ((await byTestId(page, 'command-reply').textContent()) ?? '').trim();
  assert.ok(reply.length > 0, 'command-reply is empty');
  await noErrorBanner(page);
});

browserTest('a desired shadow change is reported back by the device', async (page, t, errors) => {
  const id = await demoThermostat();
  await signedIn(page, `/devices/${encodeURIComponent(id)}`);
  const desired = byTestId(page, 'shadow-desired');
  const reported = byTestId(page, 'shadow-reported');
  await reported.waitFor();
  // A target the thermostat has not had: the simulator starts at 19 to 22.
  const target = 24.5;
  for (let attempt = 1; ; attempt++) {
    await desired.fill(JSON.stringify({ target_temp: target }));
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'PATCH' && /\/shadow(\?|$)/.test(r.url())),
      byTestId(page, 'shadow-save').click(),
    ]);
    const notice = byTestId(page, 'shadow-notice');
    if (res.status() === 200) {
      await waitFor(async () => /saved/i.test((await notice.textContent()) ?? ''), { what: 'shadow-notice to say saved' });
      break;
    }
    // The device reported between the read and the write, so If-Match
    // failed (409, which the browser logs); the page says so and reloads
    // the shadow; apply the edit again, as it asks.
    assert.equal(res.status(), 409, `saving the desired shadow answered ${res.status()}`);
    assert.ok(attempt < 3, `the desired shadow was refused ${attempt} times`);
    await waitFor(async () => /changed meanwhile/i.test((await notice.textContent()) ?? ''), {
      what: 'shadow-notice to say the shadow changed meanwhile',
    });
    t.diagnostic(`the shadow changed meanwhile (attempt ${attempt}); saving again`);
    for (let i = errors.length - 1; i >= 0; i--) {
      if (errors[i].includes('status of 409') && errors[i].includes('/shadow')) errors.splice(i, 1);
    }
  }
  // The simulated thermostat follows its desired state and reports it;
  // the page shows the report as it arrives.
  const reportedTarget = async () => {
    try {
      return JSON.parse((await reported.textContent()) || '{}').target_temp;
    } catch {
      return undefined; // not JSON (yet)
    }
  };
  await waitFor(async () => (await reportedTarget()) === target, {
    what: `shadow-reported to show target_temp ${target}`,
  });
  await noErrorBanner(page);
});

browserTest('a rule can be edited and dry-run', async (page) => {
  await signedIn(page, '/');
  await byTestId(page, 'nav-rules').click();
  await page.waitForURL((u) => u.pathname.startsWith('/rules'));
  // Open one of the demo's rules from the list.
  const row = page.locator('[data-testid="rule-row"][data-rule-id="demo-fridge-door-open"]');
  await row.getByRole('link').first().click();
  await page.waitForURL((u) => u.pathname === '/rules/demo-fridge-door-open');
  const editor = byTestId(page, 'rule-editor');
  await waitFor(async () => /\bFROM\b/i.test(await editor.inputValue()), { what: 'the rule to load into rule-editor' });
  await editor.fill("SELECT temp AS t, door_open\nFROM telemetry\nWHERE device.profile = 'fridge' AND door_open");
  // The sample inputs start as a placeholder ("my-device"), then become
  // the first device's latest values; once they have (typing sooner races
  // with that fill, which would overwrite what was typed), replace them
  // with one open-door reading.
  const inputs = page.getByLabel('Sample inputs (JSON array)');
  await waitFor(async () => /"device": *"(?!my-device")/.test(await inputs.inputValue()), {
    what: "the sample inputs to fill in with a device's latest values",
  });
  await inputs.fill('[{"device": "demo-fridge-1", "values": {"temp": 7.5, "door_open": true}}]');
  await byTestId(page, 'rule-dry-run').click();
  const result = byTestId(page, 'rule-result');
  await waitFor(async () => /Dry run:|failed/.test((await result.textContent()) ?? ''), { what: 'rule-result to show the dry run' });
  const text = ((await result.textContent()) ?? '').replace(/\s+/g, ' ').trim();
  assert.doesNotMatch(text, /failed/i, `the dry run failed: ${text}`);
  assert.match(text, /Dry run: 1 result from 1 input/, `rule-result: ${text}`);
  assert.match(text, /t: 7\.5/, `rule-result lacks the projected value: ${text}`);
  await noErrorBanner(page);
});

browserTest('an alert can be acknowledged', async (page, t, errors) => {
  await signedIn(page, '/');
  await byTestId(page, 'nav-alerts').click();
  await page.waitForURL((u) => u.pathname.startsWith('/alerts'));
  // The demo's alerts clear by themselves once their condition ends (a
  // fridge door closes), so one may clear under the pointer; then try
  // another, within bounds.
  const deadline = Date.now() + 90_000;
  for (let attempt = 1; ; attempt++) {
    // The demo raises its first alert about 13 s after the start.
    const id = await waitFor(pickAlert, { timeoutMs: Math.max(1000, deadline - Date.now()), what: 'an active alert' });
    const row = page.locator(`[data-testid="alert-row"][data-alert-id="${id}"]`);
    const status = row.locator('[data-testid="alert-status"]');
    // The row comes with the next read or over the stream.
    const reads = async (re) => re.test((await status.textContent({ timeout: 1000 }).catch(() => '')) ?? '');
    const shown = await row
      .locator('[data-testid="alert-ack"]')
      .click({ timeout: 15_000 })
      .then(() => waitFor(() => reads(/acknowledged/i), { timeoutMs: 10_000, what: `alert ${id} to read acknowledged` }))
      .catch((err) => err);
    const got = await server.api(`/api/v1/alerts/${encodeURIComponent(id)}`);
    if (shown === true) {
      // The server agrees, and knows who acknowledged it.
      assert.match(got.status, /^(acknowledged|cleared)$/, `the server says alert ${id} is ${got.status}`);
      assert.match(got.acknowledged_by ?? '', /^user:/, `alert ${id} acknowledged by ${JSON.stringify(got.acknowledged_by)}`);
      break;
    }
    if (got.status === 'cleared' && Date.now() < deadline && attempt < 5) {
      t.diagnostic(`alert ${id} cleared by itself (at ${got.cleared_at}) before it read acknowledged; trying another`);
      // A click on it after it cleared is refused (409), which the
      // browser logs; that is the race, not a fault of the page.
      for (let i = errors.length - 1; i >= 0; i--) {
        if (errors[i].includes('status of 409') && errors[i].includes(`/api/v1/alerts/${id}/acknowledge`)) errors.splice(i, 1);
      }
      await page.reload();
      continue;
    }
    const text = await status.textContent({ timeout: 1000 }).catch(() => '(no row)');
    assert.fail(
      `alert ${id} does not read acknowledged in the page (it reads ${JSON.stringify(text)}); ` +
        `the server says ${got.status}, acknowledged by ${JSON.stringify(got.acknowledged_by)}: ${shown.message}`,
    );
  }
  await noErrorBanner(page);
});

/**
 * pickAlert chooses an active alert likely to stay open a while: the
 * robot arm's vibration trend (it stays until the arm is calibrated),
 * else the newest.
 */
async function pickAlert() {
  const { alerts } = await server.api('/api/v1/alerts?status=active&limit=100');
  if (!alerts?.length) return null;
  const arm = alerts.find((a) => a.rule_id === 'demo-arm-vibration-trend');
  const newest = [...alerts].sort((a, b) => b.raised_at.localeCompare(a.raised_at))[0];
  return (arm ?? newest).id;
}

// The phone-width run has its own context (its own sign-in) at 375 px.
let phoneContext;
async function phoneCtx() {
  phoneContext ??= await browser.newContext({ ...phone, baseURL: server.url });
  phoneContext.setDefaultTimeout(20_000);
  return phoneContext;
}

browserTest(
  'the overview fits a phone screen',
  async (page, t) => {
    await signedIn(page, '/');
    await byTestId(page, 'fleet-online').waitFor();
    await noHorizontalOverflow(page, 375);
    // The navigation collapses behind a menu button, which opens it.
    const devices = byTestId(page, 'nav-devices');
    assert.equal(await devices.isVisible(), false, 'the navigation does not collapse at 375 px');
    const menu = page.getByRole('button', { name: 'Menu' });
    await menu.click();
    await devices.waitFor();
    await noHorizontalOverflow(page, 375);
    t.diagnostic(`screenshot: ${await screenshot(page, 'the overview fits a phone screen, menu open')}`);
    await menu.click();
    await devices.waitFor({ state: 'hidden' });
  },
  { ctx: phoneCtx },
);

browserTest(
  'the device page fits a phone screen',
  async (page) => {
    const id = await demoThermostat();
    // Through the menu and the device list, as a phone user would.
    await signedIn(page, '/');
    await page.getByRole('button', { name: 'Menu' }).click();
    await byTestId(page, 'nav-devices').click();
    await page.waitForURL((u) => u.pathname === '/devices');
    const row = page.locator(`[data-testid="device-row"][data-device-id="${id}"]`);
    await row.waitFor();
    await noHorizontalOverflow(page, 375);
    await row.getByRole('link').first().click();
    await page.waitForURL((u) => u.pathname === `/devices/${encodeURIComponent(id)}`);
    await byTestId(page, 'latest-value').first().waitFor();
    await byTestId(page, 'live-chart').locator('canvas').first().waitFor();
    await byTestId(page, 'command-send').waitFor();
    await noHorizontalOverflow(page, 375);
  },
  { ctx: phoneCtx },
);

// Each page once, at desktop width, for the pictures in docs/screenshots
// (make screenshots copies them there): page-<name>.png.
browserTest('every page renders without errors', async (page) => {
  const id = await demoThermostat();
  const pages = [
    ['overview', '/', 'fleet-online'],
    ['devices', '/devices', 'device-row'],
    ['device', `/devices/${encodeURIComponent(id)}`, 'latest-value'],
    ['rules', '/rules/demo-arm-vibration-trend', 'rule-editor'],
    ['alerts', '/alerts?status=all', 'alert-row'],
    ['settings', '/settings', 'settings-tab-users'],
  ];
  for (const [name, to, ready] of pages) {
    await signedIn(page, to);
    await byTestId(page, ready).first().waitFor();
    if (name === 'overview') {
      // The rate needs two reads of the counters, seconds apart.
      await page.waitForFunction(() => /\d/.test(document.querySelector('[data-testid="fleet-rate"]')?.textContent ?? ''));
    }
    if (name === 'device') {
      // Let the live chart gather a few seconds of points.
      await page.waitForFunction(() => Number(document.querySelector('[data-testid="live-chart"]')?.getAttribute('data-points')) >= 3);
    }
    await screenshot(page, `page-${name}`);
  }
});

// Last: whatever the dashboard asked of it, the server logged no error.
test('the server logged no error while the dashboard was used', { skip: skip || false }, () => {
  if (fatal) throw fatal;
  assert.ok(server, 'the demo server did not start');
  const bad = server
    .logs()
    .split('\n')
    .filter((l) => /"level":"ERROR"|^panic:|^fatal error:/.test(l));
  assert.deepEqual(bad, [], `the server logged errors:\n${bad.join('\n')}`);
});
