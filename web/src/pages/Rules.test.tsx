import { afterEach, describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen, waitFor, within, configure } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { MemoryRouter, Route, Routes, useLocation } from 'react-router-dom';
import { SessionContext } from '../session';
import { RulesPage, offsetOf, rulePosition } from './Rules';
import { ApiError } from '../api';
import { json, routeFetch, session, type Reply } from '../test/routes';

function Where() {
  return <output data-testid="location">{useLocation().pathname}</output>;
}

function renderAt(path: string, role = 'admin') {
  return render(
    <SessionContext.Provider value={{ session: session(role), setSession: () => {} }}>
      <MemoryRouter initialEntries={[path]}>
        <Routes>
          <Route path="/rules" element={<RulesPage />} />
          <Route path="/rules/:id" element={<RulesPage />} />
        </Routes>
        <Where />
      </MemoryRouter>
    </SessionContext.Provider>,
  );
}

const rule = {
  id: 'r1',
  name: 'hot fridge',
  statement: 'SELECT temperature\nFROM telemetry\nWHERE temperature > 8',
  actions: [{ type: 'alert', alert_type: 'too_warm', severity: 'warning' }],
  enabled: true,
  version: 3,
  status: 'ok',
  updated_at: '2025-01-02T10:00:00Z',
};

const failing = { ...rule, id: 'r2', name: 'broken', status: 'failing', error: 'string compared with number' };

function baseRoutes(): Record<string, Reply> {
  return {
    'GET /api/v1/rules': json(200, { rules: [rule, failing] }),
    'GET /api/v1/rules/r1': json(200, rule),
    'GET /api/v1/rules/r1/versions': json(200, {
      versions: [
        { ...rule, version: 1, statement: 'SELECT * FROM telemetry' },
        { ...rule, version: 2 },
        rule,
      ],
    }),
    'GET /api/v1/rules/r1/metrics': json(200, { evaluated: 1200, matched: 40, results: 7, errors: 0, late: 1 }),
    'GET /api/v1/devices': json(200, { devices: [{ id: 'fridge-1', name: 'Kitchen fridge' }, { id: 'fridge-2' }] }),
    'GET /api/v1/devices/fridge-1/latest': json(200, {
      device: 'fridge-1',
      values: [
        { key: 'temperature', ts: '2025-01-02T10:00:00Z', value: 9.5 },
        { key: 'door_open', ts: '2025-01-02T10:00:00Z', value: true },
        { key: 'blob', ts: '2025-01-02T10:00:00Z', value: { a: 1 } },
      ],
    }),
  };
}

// The machine running the tests may be busy: wait longer than the
// defaults before calling a test failed.
configure({ asyncUtilTimeout: 5000 });
vi.setConfig({ testTimeout: 30_000 });

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('rulePosition', () => {
  it.each([
    ['the problem body position', new ApiError(422, 'invalid', 'statement: bad', { position: { line: 4, column: 2 } }), { line: 4, column: 2 }],
    ['the position in the message', new ApiError(422, 'invalid', 'statement: line 2, column 7: unknown function foo()'), { line: 2, column: 7 }],
    ['no position in an action error', new ApiError(422, 'invalid', 'actions[0]: unknown type'), null],
    ['no position in a plain error', new Error('line 1, column 1'), null],
  ])('reads %s', (_name, err, want) => {
    expect(rulePosition(err)).toEqual(want);
  });

  it('turns a line and column into an offset of the text', () => {
    const text = 'SELECT a\nFROM telemetry\nWHERE x';
    expect(text.slice(offsetOf(text, { line: 2, column: 6 }))).toBe('telemetry\nWHERE x');
    expect(offsetOf(text, { line: 9, column: 9 })).toBeLessThanOrEqual(text.length);
  });
});

describe('RulesPage', () => {
  it('lists rules with their status and loads the chosen rule into the editor', async () => {
    routeFetch(baseRoutes());
    renderAt('/rules/r1');
    const rows = await screen.findAllByTestId('rule-row');
    expect(rows.map((r) => r.getAttribute('data-rule-id'))).toEqual(['r1', 'r2']);
    expect(within(rows[1]).getByText('failing')).toHaveProperty('title', 'string compared with number');
    await waitFor(() => expect(screen.getByTestId('rule-editor')).toHaveProperty('value', rule.statement));
    expect(await screen.findByText('v3 (current)')).toBeTruthy();
    expect(await screen.findByText('1,200')).toBeTruthy();
  });

  it('shows where the statement is wrong when validation fails', async () => {
    const calls = routeFetch({
      ...baseRoutes(),
      'POST /api/v1/rules/validate': json(
        422,
        {
          type: 'about:blank',
          title: 'Unprocessable Entity',
          status: 422,
          code: 'invalid',
          detail: 'statement: line 2, column 6: unknown source telemetri',
          position: { line: 2, column: 6 },
        },
        'application/problem+json',
      ),
    });
    renderAt('/rules/r1');
    const editor = await screen.findByTestId('rule-editor');
    await waitFor(() => expect(editor).toHaveProperty('value', rule.statement));
    fireEvent.change(editor, { target: { value: 'SELECT temperature\nFROM telemetri' } });
    await userEvent.click(screen.getByTestId('rule-validate'));

    const result = screen.getByTestId('rule-result');
    await within(result).findByText('Line 2, column 6');
    expect(result.textContent).toContain('unknown source telemetri');
    expect(result.textContent).toContain('(422)');
    expect(editor.getAttribute('aria-invalid')).toBe('true');
    const sent = calls.find((c) => c.url === '/api/v1/rules/validate');
    expect(sent?.method).toBe('POST');
    expect(sent?.body).toEqual({ statement: 'SELECT temperature\nFROM telemetri', actions: rule.actions });

    // The button puts the caret where the problem is.
    await userEvent.click(within(result).getByRole('button', { name: 'Show in the editor' }));
    const ta = editor as HTMLTextAreaElement;
    expect(document.activeElement).toBe(ta);
    expect(ta.value.slice(ta.selectionStart)).toBe('telemetri');
  });

  it('says a valid rule is valid', async () => {
    routeFetch({ ...baseRoutes(), 'POST /api/v1/rules/validate': json(200, { valid: true }) });
    renderAt('/rules/r1');
    await waitFor(() => expect(screen.getByTestId('rule-editor')).toHaveProperty('value', rule.statement));
    await userEvent.click(screen.getByTestId('rule-validate'));
    expect(await within(screen.getByTestId('rule-result')).findByText(/are valid/)).toBeTruthy();
  });

  it('refuses actions that are not a JSON array without asking the server', async () => {
    const calls = routeFetch(baseRoutes());
    renderAt('/rules/r1');
    await waitFor(() => expect(screen.getByTestId('rule-editor')).toHaveProperty('value', rule.statement));
    fireEvent.change(screen.getByLabelText('Actions (JSON array)'), { target: { value: '{"type": "alert"' } });
    await userEvent.click(screen.getByTestId('rule-validate'));
    expect(screen.getByTestId('rule-result').textContent).toMatch(/Validation failed: Actions:/);
    expect(calls.some((c) => c.url.includes('validate'))).toBe(false);
  });

  it('dry-runs the edited rule on the first device’s latest values and shows results, actions and trace', async () => {
    const calls = routeFetch({
      ...baseRoutes(),
      'POST /api/v1/rules/dry-run': json(200, {
        results: [{ device_id: 'fridge-1', ts: '2025-01-02T10:00:00Z', values: { temperature: 9.5 } }],
        trace: [{ input: { kind: 'telemetry', device_id: 'fridge-1' }, where: true, results: 1 }],
        actions: ['alert too_warm (warning) on fridge-1'],
      }),
    });
    renderAt('/rules/r1', 'operator');
    const inputs = (await screen.findByLabelText('Sample inputs (JSON array)')) as HTMLTextAreaElement;
    await waitFor(() => expect(inputs.value).toContain('fridge-1'));
    expect(JSON.parse(inputs.value)).toEqual([{ device: 'fridge-1', values: { temperature: 9.5, door_open: true } }]);

    const editor = screen.getByTestId('rule-editor');
    await waitFor(() => expect(editor).toHaveProperty('value', rule.statement));
    fireEvent.change(editor, { target: { value: 'SELECT temperature FROM telemetry WHERE door_open' } });
    await userEvent.click(screen.getByTestId('rule-dry-run'));

    const result = screen.getByTestId('rule-result');
    await within(result).findByText('Dry run: 1 result from 1 input.');
    expect(result.getAttribute('aria-live')).toBe('polite');
    expect(result.textContent).toContain('temperature: 9.5');
    expect(result.textContent).toContain('alert too_warm (warning) on fridge-1');
    expect(result.textContent).toContain('fridge-1: WHERE true · 1 result');
    const sent = calls.find((c) => c.url === '/api/v1/rules/dry-run');
    expect(sent?.body).toEqual({
      statement: 'SELECT temperature FROM telemetry WHERE door_open',
      actions: rule.actions,
      inputs: [{ device: 'fridge-1', values: { temperature: 9.5, door_open: true } }],
    });
  });

  it('holds the dry run back until the sample inputs are filled from the first device', async () => {
    let release: () => void = () => {};
    const latest = new Promise<void>((r) => {
      release = r;
    });
    routeFetch({
      ...baseRoutes(),
      'GET /api/v1/devices/fridge-1/latest': async () => {
        await latest;
        return json(200, { device: 'fridge-1', values: [{ key: 'temperature', ts: '2025-01-02T10:00:00Z', value: 4 }] });
      },
    });
    renderAt('/rules/r1');
    const button = await screen.findByTestId('rule-dry-run');
    expect(button).toHaveProperty('disabled', true);
    release();
    await waitFor(() => expect(screen.getByTestId('rule-dry-run')).toHaveProperty('disabled', false));
    expect(JSON.parse((screen.getByLabelText('Sample inputs (JSON array)') as HTMLTextAreaElement).value)).toEqual([
      { device: 'fridge-1', values: { temperature: 4 } },
    ]);
  });

  it('keeps sample inputs typed while the automatic fill was on its way', async () => {
    let release: () => void = () => {};
    const latest = new Promise<void>((r) => {
      release = r;
    });
    let asked = false;
    routeFetch({
      ...baseRoutes(),
      'GET /api/v1/devices/fridge-1/latest': async () => {
        asked = true;
        await latest;
        return json(200, { device: 'fridge-1', values: [{ key: 'temperature', ts: '2025-01-02T10:00:00Z', value: 4 }] });
      },
    });
    renderAt('/rules/r1');
    const inputs = (await screen.findByLabelText('Sample inputs (JSON array)')) as HTMLTextAreaElement;
    // The fill is on its way when the user types.
    await waitFor(() => expect(asked).toBe(true));
    const typed = '[{"device": "fridge-2", "values": {"temperature": 12}}]';
    fireEvent.change(inputs, { target: { value: typed } });
    release();
    await waitFor(() => expect(screen.getByTestId('rule-dry-run')).toHaveProperty('disabled', false));
    expect((screen.getByLabelText('Sample inputs (JSON array)') as HTMLTextAreaElement).value).toBe(typed);
  });

  it('shows the server’s refusal of a dry run', async () => {
    routeFetch({
      ...baseRoutes(),
      'POST /api/v1/rules/dry-run': json(400, { code: 'invalid', detail: 'inputs[0] names neither a device nor a topic' }, 'application/problem+json'),
    });
    renderAt('/rules/r1');
    await waitFor(() => expect(screen.getByTestId('rule-editor')).toHaveProperty('value', rule.statement));
    fireEvent.change(screen.getByLabelText('Sample inputs (JSON array)'), { target: { value: '[{"values": {}}]' } });
    await userEvent.click(screen.getByTestId('rule-dry-run'));
    expect(await within(screen.getByTestId('rule-result')).findByText(/names neither a device nor a topic/)).toBeTruthy();
  });

  it('backtests the saved rule over the chosen devices and range', async () => {
    const calls = routeFetch({
      ...baseRoutes(),
      'POST /api/v1/rules/r1/backtest': json(200, {
        results: [
          { device_id: 'fridge-1', ts: '2025-01-01T10:00:00Z', values: { temperature: 9 } },
          { device_id: 'fridge-2', ts: '2025-01-01T11:00:00Z', values: { temperature: 10 } },
        ],
        actions: [],
        count: 2,
      }),
    });
    renderAt('/rules/r1');
    const devices = (await screen.findByLabelText('Devices')) as HTMLInputElement;
    await waitFor(() => expect(devices.value).toBe('fridge-1'));
    fireEvent.change(devices, { target: { value: 'fridge-1, fridge-2' } });
    fireEvent.change(screen.getByLabelText('From'), { target: { value: '2025-01-01T00:00' } });
    fireEvent.change(screen.getByLabelText('To'), { target: { value: '2025-01-02T00:00' } });
    await userEvent.click(screen.getByTestId('rule-backtest'));
    await within(screen.getByTestId('rule-result')).findByText('Backtest: 2 results.');
    const sent = calls.find((c) => c.url.endsWith('/backtest'));
    expect(sent?.body.devices).toEqual(['fridge-1', 'fridge-2']);
    expect(new Date(sent?.body.from).getTime()).toBe(new Date('2025-01-01T00:00').getTime());
    expect(new Date(sent?.body.to).getTime()).toBe(new Date('2025-01-02T00:00').getTime());
  });

  it('saves a new version with the version it was read at', async () => {
    const calls = routeFetch({
      ...baseRoutes(),
      'PUT /api/v1/rules/r1': (c) => json(200, { ...rule, ...c.body, version: 4 }),
    });
    renderAt('/rules/r1');
    const editor = await screen.findByTestId('rule-editor');
    await waitFor(() => expect(editor).toHaveProperty('value', rule.statement));
    fireEvent.change(editor, { target: { value: 'SELECT temperature FROM telemetry WHERE temperature > 9' } });
    await userEvent.click(screen.getByRole('button', { name: 'Save' }));
    expect(await within(screen.getByTestId('rule-result')).findByText('Saved as version 4.')).toBeTruthy();
    const put = calls.find((c) => c.method === 'PUT');
    expect(put?.body).toEqual({
      name: 'hot fridge',
      statement: 'SELECT temperature FROM telemetry WHERE temperature > 9',
      actions: rule.actions,
      version: 3,
    });
  });

  it('creates a rule and opens it', async () => {
    const created = { ...rule, id: 'r9', name: 'new one', version: 1 };
    const calls = routeFetch({
      ...baseRoutes(),
      'POST /api/v1/rules': json(201, created),
      'GET /api/v1/rules/r9': json(200, created),
      'GET /api/v1/rules/r9/versions': json(200, { versions: [created] }),
      'GET /api/v1/rules/r9/metrics': json(200, {}),
    });
    renderAt('/rules');
    await userEvent.type(screen.getByLabelText('Name'), 'new one');
    await userEvent.click(screen.getByRole('button', { name: 'Create' }));
    await waitFor(() => expect(screen.getByTestId('location').textContent).toBe('/rules/r9'));
    expect(await within(await screen.findByTestId('rule-result')).findByText('Created rule new one.')).toBeTruthy();
    const post = calls.find((c) => c.method === 'POST' && c.url === '/api/v1/rules');
    expect(post?.body.name).toBe('new one');
    expect(post?.body.enabled).toBe(true);
    expect(Array.isArray(post?.body.actions)).toBe(true);
  });

  it('deletes a rule after confirmation', async () => {
    const calls = routeFetch({ ...baseRoutes(), 'DELETE /api/v1/rules/r1': json(204) });
    renderAt('/rules/r1');
    await waitFor(() => expect(screen.getByTestId('rule-editor')).toHaveProperty('value', rule.statement));
    await userEvent.click(screen.getByRole('button', { name: 'Delete' }));
    const dialog = screen.getByRole('dialog');
    expect(calls.some((c) => c.method === 'DELETE')).toBe(false);
    await userEvent.click(within(dialog).getByRole('button', { name: 'Delete' }));
    await waitFor(() => expect(screen.getByTestId('location').textContent).toBe('/rules'));
    expect(calls.filter((c) => c.method === 'DELETE').map((c) => c.url)).toEqual(['/api/v1/rules/r1']);
  });

  it('rolls back to an old version after confirmation', async () => {
    const calls = routeFetch({
      ...baseRoutes(),
      'POST /api/v1/rules/r1/rollback': json(200, { ...rule, version: 4, statement: 'SELECT * FROM telemetry' }),
    });
    renderAt('/rules/r1');
    await userEvent.click(await screen.findByRole('button', { name: 'Roll back to version 1' }));
    await userEvent.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Roll back' }));
    await within(screen.getByTestId('rule-result')).findByText(/Rolled back to version 1/);
    expect(screen.getByTestId('rule-editor')).toHaveProperty('value', 'SELECT * FROM telemetry');
    expect(calls.find((c) => c.url.endsWith('/rollback'))?.body).toEqual({ version: 1 });
  });

  it('disables a rule from the list', async () => {
    const calls = routeFetch({ ...baseRoutes(), 'POST /api/v1/rules/r1/disable': json(200, { ...rule, enabled: false }) });
    renderAt('/rules');
    const toggle = await screen.findByRole('checkbox', { name: 'Enable hot fridge' });
    expect(toggle).toHaveProperty('checked', true);
    await userEvent.click(toggle);
    await waitFor(() => expect(screen.getByRole('checkbox', { name: 'Enable hot fridge' })).toHaveProperty('checked', false));
    expect(calls.some((c) => c.method === 'POST' && c.url === '/api/v1/rules/r1/disable')).toBe(true);
  });

  it('lets a viewer read but not try out, save or toggle rules', async () => {
    routeFetch(baseRoutes());
    renderAt('/rules/r1', 'viewer');
    await waitFor(() => expect(screen.getByTestId('rule-editor')).toHaveProperty('value', rule.statement));
    expect(screen.getByTestId('rule-validate')).toHaveProperty('disabled', true);
    expect(screen.getByTestId('rule-dry-run')).toHaveProperty('disabled', true);
    expect(screen.getByRole('button', { name: 'Save' })).toHaveProperty('disabled', true);
    expect(screen.getByRole('checkbox', { name: 'Enable hot fridge' })).toHaveProperty('disabled', true);
  });

  it('shows a rule that does not exist as not found', async () => {
    routeFetch(baseRoutes());
    renderAt('/rules/nope');
    expect(await screen.findByRole('alert')).toBeTruthy();
    expect(screen.getByRole('link', { name: 'Back to the rules' })).toBeTruthy();
  });
});
