// The rules page: the tenant's rules with their status, and the
// development loop of one rule: edit its statement and actions, validate
// them, dry-run them on sample inputs, backtest the saved version on
// stored telemetry, save, roll back to an old version, delete.
//
// /rules shows the list and an editor for a new rule; /rules/:id the list
// and the editor of that rule.
import { useCallback, useEffect, useId, useRef, useState, type ReactNode, type RefObject } from 'react';
import { Link, useLocation, useNavigate, useParams } from 'react-router-dom';
import { api, ApiError, roleAtLeast } from '../api';
import { useRole } from '../session';
import {
  Badge,
  Button,
  Card,
  ErrorBanner,
  Field,
  Modal,
  Spinner,
  Table,
  errorMessage,
  formatNumber,
  formatTime,
  type Column,
} from '../ui';

/** One action of a rule, as the API has it. */
export interface RuleAction {
  type: string;
  [field: string]: unknown;
}

/** A rule as the API answers it. */
export interface Rule {
  id: string;
  name: string;
  statement: string;
  actions: RuleAction[] | null;
  enabled: boolean;
  version: number;
  status: string;
  error?: string;
  created_at?: string;
  updated_at?: string;
}

/** One output of a rule. */
export interface RuleResult {
  rule_id?: string;
  rule_version?: number;
  device_id?: string;
  ts: string;
  window_start?: string;
  values: Record<string, unknown> | null;
}

/** The answer of a dry run. */
export interface DryRunAnswer {
  results: RuleResult[];
  trace: unknown[];
  actions: string[];
}

/** The answer of a backtest. */
export interface BacktestAnswer {
  results: RuleResult[];
  actions: string[];
  count: number;
}

/** A rule's counters since the node started. */
interface RuleMetrics {
  evaluated?: number;
  matched?: number;
  results?: number;
  errors?: number;
  late?: number;
  last_error?: string;
  latency_p50_ns?: number;
  latency_p99_ns?: number;
}

/** A place in a statement, 1-based. */
export interface Position {
  line: number;
  column: number;
}

/** The position a rule problem points at, from its body or its text. */
export function rulePosition(err: unknown): Position | null {
  if (!(err instanceof ApiError)) return null;
  const p = err.problem?.position as { line?: unknown; column?: unknown } | undefined;
  if (p && typeof p.line === 'number' && p.line > 0) {
    return { line: p.line, column: typeof p.column === 'number' && p.column > 0 ? p.column : 1 };
  }
  // The service writes the position into the message too
  // ("statement: line 3, column 7: …").
  const m = /line (\d+), column (\d+)/.exec(err.detail ?? '');
  return m ? { line: Number(m[1]), column: Number(m[2]) } : null;
}

/** The character offset of a 1-based line and column in text. */
export function offsetOf(text: string, pos: Position): number {
  const lines = text.split('\n');
  let off = 0;
  for (let i = 0; i < pos.line - 1 && i < lines.length; i++) off += lines[i].length + 1;
  const line = lines[Math.min(pos.line - 1, lines.length - 1)] ?? '';
  return Math.min(off + Math.max(0, Math.min(pos.column - 1, line.length)), text.length);
}

const ruleURL = (id: string) => `/api/v1/rules/${encodeURIComponent(id)}`;

const newStatement = `SELECT temperature
FROM telemetry
WHERE temperature > 30`;

const newActions = `[
  {
    "type": "alert",
    "alert_type": "too_hot",
    "severity": "warning",
    "min_duration": "30s",
    "clear_after": "1m"
  }
]`;

export function RulesPage() {
  const { id } = useParams();
  const role = useRole();
  const [rules, setRules] = useState<Rule[] | null>(null);
  const [listError, setListError] = useState<unknown>(null);
  const [toggling, setToggling] = useState('');

  const loadRules = useCallback(async () => {
    try {
      const r = await api<{ rules: Rule[] | null }>('/api/v1/rules');
      setRules(r.rules ?? []);
      setListError(null);
    } catch (e) {
      setListError(e);
    }
  }, []);

  useEffect(() => {
    void loadRules();
  }, [loadRules]);

  const setEnabled = async (r: Rule, on: boolean) => {
    setToggling(r.id);
    try {
      const updated = await api<Rule>(`${ruleURL(r.id)}/${on ? 'enable' : 'disable'}`, { method: 'POST' });
      setRules((rs) => rs?.map((x) => (x.id === updated.id ? updated : x)) ?? null);
      setListError(null);
    } catch (e) {
      setListError(e);
    } finally {
      setToggling('');
    }
  };

  const isAdmin = roleAtLeast(role, 'admin');
  const columns: Column<Rule>[] = [
    {
      key: 'name',
      header: 'Name',
      render: (r) => (
        <Link to={`/rules/${encodeURIComponent(r.id)}`} aria-current={r.id === id ? 'page' : undefined}>
          {r.name || r.id}
        </Link>
      ),
    },
    { key: 'status', header: 'Status', render: (r) => <RuleStatus rule={r} /> },
    {
      key: 'enabled',
      header: 'Enabled',
      render: (r) => (
        <label style={{ display: 'inline-flex', alignItems: 'center', gap: '0.35rem', position: 'relative' }}>
          <input
            type="checkbox"
            style={{ width: 'auto', minHeight: 0 }}
            checked={r.enabled}
            disabled={!isAdmin || toggling === r.id}
            title={isAdmin ? undefined : 'Only an admin can enable or disable rules'}
            onChange={(e) => void setEnabled(r, e.target.checked)}
          />
          <span style={srOnly}>Enable {r.name || r.id}</span>
          <span aria-hidden="true"> {r.enabled ? 'on' : 'off'}</span>
        </label>
      ),
    },
    { key: 'version', header: 'Version', render: (r) => `v${r.version}` },
  ];

  return (
    <>
      <div style={pageHead}>
        <h1>Rules</h1>
        {id && isAdmin ? (
          <Link to="/rules" className="btn btn-secondary">
            New rule
          </Link>
        ) : null}
      </div>
      <div style={twoColumns}>
        <div style={{ flex: '1 1 18rem', minWidth: 0 }}>
          <Card title="All rules">
            <ErrorBanner error={listError} onDismiss={() => setListError(null)} />
            {rules === null && !listError ? (
              <Spinner label="Loading rules…" />
            ) : (
              <Table
                caption="Rules"
                columns={columns}
                rows={rules ?? []}
                rowKey={(r) => r.id}
                empty={isAdmin ? 'No rules yet; write one in the editor.' : 'No rules yet.'}
                rowProps={(r) => ({ 'data-testid': 'rule-row', 'data-rule-id': r.id })}
              />
            )}
          </Card>
        </div>
        <div style={{ flex: '2 1 30rem', minWidth: 0 }}>
          <RuleEditor key={id ?? ''} id={id} role={role} onChanged={loadRules} />
        </div>
      </div>
    </>
  );
}

const pageHead = { display: 'flex', flexWrap: 'wrap', gap: '0.5rem', justifyContent: 'space-between', alignItems: 'baseline' } as const;

/** Hides text from the eye but not from screen readers. */
const srOnly = {
  position: 'absolute',
  width: '1px',
  height: '1px',
  overflow: 'hidden',
  clipPath: 'inset(50%)',
  whiteSpace: 'nowrap',
} as const;

/**
 * Puts the list beside the editor when there is room (the editor twice
 * as wide), one under the other on a phone.
 */
const twoColumns = { display: 'flex', flexWrap: 'wrap', gap: '0 1rem', alignItems: 'flex-start' } as const;

function RuleStatus({ rule }: { rule: Rule }) {
  if (!rule.enabled) return <Badge tone="muted">disabled</Badge>;
  if (rule.status === 'failing') {
    return (
      <Badge tone="bad" title={rule.error}>
        failing
      </Badge>
    );
  }
  return <Badge tone="ok">{rule.status || 'ok'}</Badge>;
}

/** What the result panel shows. */
type Outcome =
  | { kind: 'none' }
  | { kind: 'message'; text: string }
  | { kind: 'valid' }
  | { kind: 'dry-run'; answer: DryRunAnswer }
  | { kind: 'backtest'; answer: BacktestAnswer }
  | { kind: 'error'; what: string; error: unknown; position: Position | null };

type Busy = '' | 'load' | 'validate' | 'dry-run' | 'backtest' | 'save' | 'delete';

function RuleEditor({ id, role, onChanged }: { id?: string; role: string; onChanged: () => void }) {
  const navigate = useNavigate();
  const loc = useLocation();
  const flash = (loc.state as { flash?: string } | null)?.flash;
  const [rule, setRule] = useState<Rule | null>(null);
  const [name, setName] = useState('');
  const [statement, setStatement] = useState(id ? '' : newStatement);
  const [actionsText, setActionsText] = useState(id ? '[]' : newActions);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [busy, setBusy] = useState<Busy>(id ? 'load' : '');
  const [outcome, setOutcome] = useState<Outcome>(flash ? { kind: 'message', text: flash } : { kind: 'none' });
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [refresh, setRefresh] = useState(0);
  const editor = useRef<HTMLTextAreaElement>(null);
  const errId = useId();

  const isAdmin = roleAtLeast(role, 'admin');
  const isOperator = roleAtLeast(role, 'operator');

  const show = (r: Rule) => {
    setRule(r);
    setName(r.name);
    setStatement(r.statement);
    setActionsText(JSON.stringify(r.actions ?? [], null, 2));
  };

  useEffect(() => {
    if (!id) return;
    let live = true;
    api<Rule>(ruleURL(id))
      .then((r) => live && show(r))
      .catch((e: unknown) => live && setLoadError(e))
      .finally(() => live && setBusy(''));
    return () => {
      live = false;
    };
  }, [id]);

  /** The actions as JSON, or null after showing why they are not. */
  const actions = (what: string): RuleAction[] | null => {
    try {
      const a: unknown = JSON.parse(actionsText.trim() || '[]');
      if (!Array.isArray(a)) throw new Error('actions must be a JSON array of actions, like [{"type": "alert", …}]');
      return a as RuleAction[];
    } catch (e) {
      setOutcome({ kind: 'error', what, error: new Error(`Actions: ${errorMessage(e)}`), position: null });
      return null;
    }
  };

  const run = async (what: Exclude<Busy, '' | 'load'>, label: string, fn: () => Promise<void>) => {
    setBusy(what);
    try {
      await fn();
    } catch (e) {
      setOutcome({ kind: 'error', what: label, error: e, position: rulePosition(e) });
    } finally {
      setBusy('');
    }
  };

  const validate = () => {
    const a = actions('Validation');
    if (!a) return;
    void run('validate', 'Validation', async () => {
      await api('/api/v1/rules/validate', { method: 'POST', body: { statement, actions: a } });
      setOutcome({ kind: 'valid' });
    });
  };

  const dryRun = (inputs: unknown[]) => {
    const a = actions('Dry run');
    if (!a) return;
    void run('dry-run', 'Dry run', async () => {
      const answer = await api<DryRunAnswer>('/api/v1/rules/dry-run', {
        method: 'POST',
        body: { statement, actions: a, inputs },
      });
      setOutcome({ kind: 'dry-run', answer });
    });
  };

  const backtest = (body: { devices: string[]; from: string; to: string }) => {
    if (!id) return;
    void run('backtest', 'Backtest', async () => {
      const answer = await api<BacktestAnswer>(`${ruleURL(id)}/backtest`, { method: 'POST', body });
      setOutcome({ kind: 'backtest', answer });
    });
  };

  const save = () => {
    const a = actions('Saving');
    if (!a) return;
    void run('save', 'Saving', async () => {
      if (id && rule) {
        const r = await api<Rule>(ruleURL(id), {
          method: 'PUT',
          body: { name, statement, actions: a, version: rule.version },
        });
        show(r);
        setOutcome({ kind: 'message', text: `Saved as version ${r.version}.` });
        setRefresh((n) => n + 1);
      } else {
        const r = await api<Rule>('/api/v1/rules', { method: 'POST', body: { name, statement, actions: a, enabled: true } });
        navigate(`/rules/${encodeURIComponent(r.id)}`, { state: { flash: `Created rule ${r.name || r.id}.` } });
      }
      onChanged();
    });
  };

  const remove = () => {
    if (!id) return;
    setConfirmDelete(false);
    void run('delete', 'Deleting', async () => {
      await api(ruleURL(id), { method: 'DELETE' });
      onChanged();
      navigate('/rules', { state: { flash: `Deleted rule ${rule?.name || id}.` } });
    });
  };

  const rollback = (version: number) => {
    if (!id) return;
    void run('save', 'Rollback', async () => {
      const r = await api<Rule>(`${ruleURL(id)}/rollback`, { method: 'POST', body: { version } });
      show(r);
      setOutcome({ kind: 'message', text: `Rolled back to version ${version}; the rule is now version ${r.version}.` });
      setRefresh((n) => n + 1);
      onChanged();
    });
  };

  const goTo = (pos: Position) => {
    const ta = editor.current;
    if (!ta) return;
    const off = offsetOf(statement, pos);
    ta.focus();
    ta.setSelectionRange(off, Math.min(off + 1, statement.length));
  };

  if (id && loadError) {
    return (
      <Card title="Rule">
        <ErrorBanner error={loadError} />
        <p>
          <Link to="/rules">Back to the rules</Link>
        </p>
      </Card>
    );
  }
  if (busy === 'load') {
    return (
      <Card title="Rule">
        <Spinner label="Loading the rule…" />
      </Card>
    );
  }

  const errorPos = outcome.kind === 'error' ? outcome.position : null;
  return (
    <div>
      <Card
        title={id ? `Rule ${rule?.name || id}` : 'New rule'}
        actions={rule ? <RuleStatus rule={rule} /> : undefined}
      >
        {rule?.status === 'failing' && rule.error ? (
          <p className="banner banner-error">
            Failing: {rule.error}
          </p>
        ) : null}
        <form
          onSubmit={(e) => {
            e.preventDefault();
            save();
          }}
        >
          <Field label="Name">
            {(fid) => <input id={fid} value={name} onChange={(e) => setName(e.target.value)} maxLength={256} />}
          </Field>
          <Field label="Statement" hint="The rule language is described in docs/rules.md.">
            {(fid, describedBy) => (
              <StatementEditor
                id={fid}
                value={statement}
                onChange={setStatement}
                textarea={editor}
                errorLine={errorPos?.line}
                describedBy={[describedBy, errorPos ? errId : undefined].filter(Boolean).join(' ') || undefined}
              />
            )}
          </Field>
          <Field label="Actions (JSON array)" hint='For example [{"type": "alert", "alert_type": "door_open", "severity": "warning"}]'>
            {(fid, describedBy) => (
              <textarea
                id={fid}
                aria-describedby={describedBy}
                value={actionsText}
                onChange={(e) => setActionsText(e.target.value)}
                rows={6}
                spellCheck={false}
                style={monospace}
              />
            )}
          </Field>
          <div className="button-row" style={buttonRow}>
            <Button
              data-testid="rule-validate"
              onClick={validate}
              busy={busy === 'validate'}
              disabled={!isOperator || (busy !== '' && busy !== 'validate')}
              title={isOperator ? undefined : 'Validating needs the operator role'}
            >
              Validate
            </Button>
            <Button
              type="submit"
              variant="primary"
              busy={busy === 'save'}
              disabled={!isAdmin || (busy !== '' && busy !== 'save')}
              title={isAdmin ? undefined : 'Only an admin can save rules'}
            >
              {id ? 'Save' : 'Create'}
            </Button>
            {id ? (
              <Button
                variant="danger"
                onClick={() => setConfirmDelete(true)}
                busy={busy === 'delete'}
                disabled={!isAdmin || busy !== ''}
                title={isAdmin ? undefined : 'Only an admin can delete rules'}
              >
                Delete
              </Button>
            ) : null}
          </div>
        </form>
      </Card>

      <DryRunCard busy={busy} canRun={isOperator} onRun={dryRun} onBacktest={id ? backtest : undefined} />

      <Card title="Result">
        <div data-testid="rule-result" aria-live="polite" aria-atomic="false">
          <OutcomeView outcome={outcome} errId={errId} onGoTo={goTo} />
        </div>
      </Card>

      {id && rule ? (
        <>
          <MetricsCard id={id} refresh={refresh} />
          <VersionsCard
            id={id}
            current={rule.version}
            refresh={refresh}
            canRollback={isAdmin && busy === ''}
            onLoad={(v) => {
              setName(v.name);
              setStatement(v.statement);
              setActionsText(JSON.stringify(v.actions ?? [], null, 2));
              setOutcome({ kind: 'message', text: `Loaded version ${v.version} into the editor; save to make it current.` });
            }}
            onRollback={rollback}
          />
        </>
      ) : null}

      {confirmDelete ? (
        <Modal title="Delete this rule?" onClose={() => setConfirmDelete(false)}>
          <p>
            The rule <strong>{rule?.name || id}</strong> and all its versions are deleted; its alerts stay.
          </p>
          <div style={buttonRow}>
            <Button onClick={() => setConfirmDelete(false)}>Cancel</Button>
            <Button variant="danger" onClick={remove}>
              Delete
            </Button>
          </div>
        </Modal>
      ) : null}
    </div>
  );
}

const monospace = {
  fontFamily: 'var(--mono, ui-monospace, SFMono-Regular, Menlo, Consolas, monospace)',
  fontSize: '0.875rem',
  width: '100%',
} as const;

/** Fields side by side as far as they fit; buttons line up with the inputs. */
const formRow = { display: 'grid', gridTemplateColumns: 'repeat(auto-fit, minmax(min(100%, 11rem), 1fr))', gap: '0 0.75rem', alignItems: 'start' } as const;
// The top margin is a label's height (see .field label), so that the
// button lines up with the inputs beside it.
const formButton = { margin: '1.55rem 0 0.75rem', justifySelf: 'start' } as const;

const buttonRow = { display: 'flex', flexWrap: 'wrap', gap: '0.5rem', marginTop: '0.75rem' } as const;

/**
 * A monospace editor of a statement with line numbers; errorLine marks
 * the line a problem points at.
 */
function StatementEditor({
  id,
  value,
  onChange,
  textarea,
  errorLine,
  describedBy,
}: {
  id: string;
  value: string;
  onChange: (v: string) => void;
  textarea: RefObject<HTMLTextAreaElement | null>;
  errorLine?: number;
  describedBy?: string;
}) {
  const gutter = useRef<HTMLDivElement>(null);
  const lines = Math.max(1, value.split('\n').length);
  const metrics = { fontSize: '0.875rem', lineHeight: '1.5', padding: '0.5rem 0.5rem' } as const;
  return (
    <div
      style={{
        display: 'flex',
        border: '1px solid var(--border, #8888)',
        borderRadius: 'var(--radius, 4px)',
        overflow: 'hidden',
      }}
    >
      <div
        ref={gutter}
        aria-hidden="true"
        style={{
          ...monospace,
          ...metrics,
          width: 'auto',
          minWidth: '2.5em',
          textAlign: 'right',
          color: 'var(--muted, #888)',
          background: 'var(--bg, transparent)',
          overflow: 'hidden',
          userSelect: 'none',
          whiteSpace: 'pre',
        }}
      >
        {Array.from({ length: lines }, (_, i) => (
          <div
            key={i}
            style={
              errorLine === i + 1
                ? { color: 'var(--bad, #c00)', fontWeight: 700, background: 'var(--bad-soft, #f002)' }
                : undefined
            }
          >
            {i + 1}
          </div>
        ))}
      </div>
      <textarea
        id={id}
        ref={textarea}
        data-testid="rule-editor"
        value={value}
        onChange={(e) => onChange(e.target.value)}
        onScroll={(e) => {
          if (gutter.current) gutter.current.scrollTop = e.currentTarget.scrollTop;
        }}
        aria-invalid={errorLine ? true : undefined}
        aria-describedby={describedBy}
        rows={Math.min(20, Math.max(6, lines + 1))}
        spellCheck={false}
        autoCapitalize="off"
        autoCorrect="off"
        wrap="off"
        style={{ ...monospace, ...metrics, flex: 1, minWidth: 0, border: 0, resize: 'vertical', borderRadius: 0, outlineOffset: '-3px' }}
      />
    </div>
  );
}

/** The sample inputs of a dry run before the user has picked a device. */
function sampleInputs(device: string, values: Record<string, unknown>): string {
  return JSON.stringify([{ device, values }], null, 2);
}

interface DeviceSummary {
  id: string;
  name?: string;
}

interface Latest {
  key: string;
  ts: string;
  value: unknown;
}

/** Keeps the values a dry run takes: numbers, booleans and strings. */
function latestValues(ls: Latest[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const l of ls) {
    if (typeof l.value === 'number' || typeof l.value === 'boolean' || typeof l.value === 'string') out[l.key] = l.value;
  }
  return out;
}

const toLocalInput = (d: Date) => {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};

/**
 * The sample inputs of a dry run, filled from a device's latest values,
 * and, for a saved rule, the range and devices of a backtest.
 */
function DryRunCard({
  busy,
  canRun,
  onRun,
  onBacktest,
}: {
  busy: Busy;
  canRun: boolean;
  onRun: (inputs: unknown[]) => void;
  onBacktest?: (b: { devices: string[]; from: string; to: string }) => void;
}) {
  const [devices, setDevices] = useState<DeviceSummary[]>([]);
  const [device, setDevice] = useState('');
  const [inputs, setInputs] = useState(() => sampleInputs('my-device', { temperature: 31.5 }));
  const [touched, setTouched] = useState(false);
  // touchedNow is touched as the automatic fill sees it when its answer
  // arrives: what the user typed meanwhile wins.
  const touchedNow = useRef(false);
  touchedNow.current = touched;
  const [inputsError, setInputsError] = useState('');
  const [filling, setFilling] = useState(false);
  // preparing holds the dry run back until the sample inputs are filled
  // from the first device (or there is none), so that a quick click does
  // not run it on the placeholder device.
  const [preparing, setPreparing] = useState(true);
  const [fillError, setFillError] = useState<unknown>(null);
  const [btDevices, setBtDevices] = useState('');
  const [from, setFrom] = useState(() => toLocalInput(new Date(Date.now() - 3600_000)));
  const [to, setTo] = useState(() => toLocalInput(new Date()));
  const [btError, setBtError] = useState('');

  const fill = useCallback(async (d: string, auto = false) => {
    if (!d) return;
    setFilling(true);
    setFillError(null);
    try {
      const l = await api<{ values: Latest[] | null }>(`/api/v1/devices/${encodeURIComponent(d)}/latest`);
      if (auto && touchedNow.current) return;
      const vals = latestValues(l.values ?? []);
      setInputs(sampleInputs(d, Object.keys(vals).length ? vals : { temperature: 31.5 }));
      setInputsError('');
    } catch (e) {
      setFillError(e);
    } finally {
      setFilling(false);
      setPreparing(false);
    }
  }, []);

  // The first device, and its latest values as the sample input, unless
  // the user has written inputs already.
  useEffect(() => {
    let live = true;
    api<{ devices: DeviceSummary[] | null }>('/api/v1/devices?limit=100')
      .then((r) => {
        if (!live) return;
        const ds = r.devices ?? [];
        setDevices(ds);
        if (ds.length) {
          setDevice((cur) => cur || ds[0].id);
          setBtDevices((cur) => cur || ds[0].id);
        } else {
          setPreparing(false);
        }
      })
      .catch(() => {
        // The inputs can be written by hand; the device list only helps.
        if (live) setPreparing(false);
      });
    return () => {
      live = false;
    };
  }, []);

  const firstDevice = devices[0]?.id;
  useEffect(() => {
    if (firstDevice && !touched) void fill(firstDevice, true);
    else if (firstDevice) setPreparing(false);
    // Only the first load fills on its own; afterwards the button does.
  }, [firstDevice]);

  const run = () => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(inputs);
    } catch (e) {
      setInputsError(`Sample inputs are not JSON: ${errorMessage(e)}`);
      return;
    }
    const list = Array.isArray(parsed) ? parsed : [parsed];
    if (list.length === 0) {
      setInputsError('Give at least one sample input.');
      return;
    }
    setInputsError('');
    onRun(list);
  };

  const runBacktest = () => {
    const ds = btDevices
      .split(/[\s,]+/)
      .map((s) => s.trim())
      .filter(Boolean);
    const f = new Date(from);
    const t = new Date(to);
    if (!ds.length) return setBtError('Name at least one device.');
    if (Number.isNaN(f.getTime()) || Number.isNaN(t.getTime())) return setBtError('Give both a start and an end.');
    if (f >= t) return setBtError('The end must be after the start.');
    setBtError('');
    onBacktest?.({ devices: ds, from: f.toISOString(), to: t.toISOString() });
  };

  const idle = busy === '';
  const why = canRun ? undefined : 'Trying rules out needs the operator role';
  return (
    <Card title="Try it out">
      <div style={formRow}>
        <Field label="Device">
          {(fid) =>
            devices.length ? (
              <select id={fid} value={device} onChange={(e) => setDevice(e.target.value)}>
                {devices.map((d) => (
                  <option key={d.id} value={d.id}>
                    {d.name ? `${d.name} (${d.id})` : d.id}
                  </option>
                ))}
              </select>
            ) : (
              <input id={fid} value={device} onChange={(e) => setDevice(e.target.value)} placeholder="device ID" />
            )
          }
        </Field>
        <div style={formButton}>
          <Button
            onClick={() => {
              setTouched(true);
              void fill(device);
            }}
            busy={filling}
            disabled={!device}
          >
            Use its latest values
          </Button>
        </div>
      </div>
      <ErrorBanner error={fillError} onDismiss={() => setFillError(null)} />
      <Field
        label="Sample inputs (JSON array)"
        hint='Each input is {"device", "values", "ts"?} for telemetry, or {"topic", "payload"} for an MQTT source.'
        error={inputsError || undefined}
      >
        {(fid, describedBy) => (
          <textarea
            id={fid}
            aria-describedby={describedBy}
            aria-invalid={inputsError ? true : undefined}
            value={inputs}
            onChange={(e) => {
              setTouched(true);
              setPreparing(false);
              setInputs(e.target.value);
            }}
            rows={8}
            spellCheck={false}
            style={monospace}
          />
        )}
      </Field>
      <div style={buttonRow}>
        <Button
          variant="primary"
          data-testid="rule-dry-run"
          onClick={run}
          busy={busy === 'dry-run'}
          disabled={!canRun || preparing || (!idle && busy !== 'dry-run')}
          title={why}
        >
          Dry run
        </Button>
      </div>

      {onBacktest ? (
        <fieldset style={{ marginTop: '1rem', border: 0, padding: 0, minWidth: 0 }}>
          <legend>
            <strong>Backtest</strong> the saved version on stored telemetry
          </legend>
          <div style={{ ...formRow, gridTemplateColumns: 'repeat(auto-fit, minmax(min(100%, 16rem), 1fr))' }}>
            <Field label="Devices" hint="IDs separated by commas">
              {(fid, describedBy) => (
                <input id={fid} aria-describedby={describedBy} value={btDevices} onChange={(e) => setBtDevices(e.target.value)} />
              )}
            </Field>
            <Field label="From">
              {(fid) => <input id={fid} type="datetime-local" value={from} onChange={(e) => setFrom(e.target.value)} />}
            </Field>
            <Field label="To">
              {(fid) => <input id={fid} type="datetime-local" value={to} onChange={(e) => setTo(e.target.value)} />}
            </Field>
            <div style={formButton}>
              <Button
                data-testid="rule-backtest"
                onClick={runBacktest}
                busy={busy === 'backtest'}
                disabled={!canRun || (!idle && busy !== 'backtest')}
                title={why}
              >
                Backtest
              </Button>
            </div>
          </div>
          {btError ? (
            <p className="field-error" role="alert">
              {btError}
            </p>
          ) : null}
        </fieldset>
      ) : null}
    </Card>
  );
}

function OutcomeView({ outcome, errId, onGoTo }: { outcome: Outcome; errId: string; onGoTo: (p: Position) => void }) {
  switch (outcome.kind) {
    case 'none':
      return <p className="muted">Validate the rule or dry-run it to see what it does.</p>;
    case 'message':
      return <p role="status">{outcome.text}</p>;
    case 'valid':
      return (
        <p role="status">
          <Badge tone="ok">valid</Badge> The statement and the actions are valid.
        </p>
      );
    case 'error': {
      const e = outcome.error;
      const pos = outcome.position;
      return (
        <div className="banner banner-error" role="alert" id={errId}>
          <p style={{ margin: 0 }}>
            <strong>{outcome.what} failed</strong>
            {e instanceof ApiError && e.status ? ` (${e.status})` : ''}: {errorMessage(e)}
          </p>
          {e instanceof ApiError && e.status === 409 ? (
            <p style={{ margin: '0.5rem 0 0' }}>The rule changed since it was opened: reload the page to see the current version.</p>
          ) : null}
          {pos ? (
            <p style={{ margin: '0.5rem 0 0' }}>
              <span data-testid="rule-error-position">
                Line {pos.line}, column {pos.column}
              </span>{' '}
              <Button variant="link" onClick={() => onGoTo(pos)}>
                Show in the editor
              </Button>
            </p>
          ) : null}
        </div>
      );
    }
    case 'dry-run': {
      const a = outcome.answer;
      return (
        <>
          <p role="status">
            Dry run: {count(a.results?.length ?? 0, 'result')} from {count(a.trace?.length ?? 0, 'input')}.
          </p>
          <ResultsTable results={a.results ?? []} />
          <ActionsList actions={a.actions ?? []} />
          <TraceView trace={a.trace ?? []} />
        </>
      );
    }
    case 'backtest': {
      const a = outcome.answer;
      return (
        <>
          <p role="status">Backtest: {count(a.count ?? a.results?.length ?? 0, 'result')}.</p>
          <ResultsTable results={(a.results ?? []).slice(0, 500)} />
          {(a.results?.length ?? 0) > 500 ? <p className="muted">Showing the first 500 results.</p> : null}
          <ActionsList actions={(a.actions ?? []).slice(0, 200)} />
        </>
      );
    }
  }
}

const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

function ResultsTable({ results }: { results: RuleResult[] }) {
  const cols: Column<RuleResult & { i: number }>[] = [
    { key: 'device', header: 'Device', render: (r) => r.device_id || '—' },
    { key: 'time', header: 'Time', render: (r) => formatTime(r.ts) },
    {
      key: 'values',
      header: 'Values',
      render: (r) => <code style={{ wordBreak: 'break-word' }}>{formatValues(r.values)}</code>,
    },
  ];
  return (
    <Table
      caption="Results"
      columns={cols}
      rows={results.map((r, i) => ({ ...r, i }))}
      rowKey={(r) => String(r.i)}
      empty="No results: no input matched."
    />
  );
}

function formatValues(v: Record<string, unknown> | null): string {
  if (!v) return '{}';
  return Object.entries(v)
    .map(([k, x]) => `${k}: ${typeof x === 'object' && x !== null ? JSON.stringify(x) : formatNumber(x)}`)
    .join(', ');
}

function ActionsList({ actions }: { actions: string[] }) {
  if (!actions.length) return <p className="muted">No action would run.</p>;
  return (
    <>
      <h3>What the actions would do</h3>
      <ul>
        {actions.map((a, i) => (
          <li key={i}>{a}</li>
        ))}
      </ul>
    </>
  );
}

interface TraceStep {
  input?: { kind?: string; device_id?: string; ts?: string; topic?: string };
  where?: boolean;
  having?: boolean;
  skipped?: string;
  late?: boolean;
  results?: number;
  error?: string;
}

function TraceView({ trace }: { trace: unknown[] }) {
  if (!trace.length) return null;
  return (
    <>
      <h3>Trace</h3>
      <ol>
        {trace.map((t, i) => {
          const s = (t ?? {}) as TraceStep;
          const parts: ReactNode[] = [];
          if (s.where !== undefined) parts.push(`WHERE ${s.where ? 'true' : 'false'}`);
          if (s.having !== undefined) parts.push(`HAVING ${s.having ? 'true' : 'false'}`);
          if (s.late) parts.push('late');
          if (s.skipped) parts.push(`skipped: ${s.skipped}`);
          parts.push(count(s.results ?? 0, 'result'));
          return (
            <li key={i}>
              {s.input?.device_id || s.input?.topic || s.input?.kind || 'input'}: {parts.join(' · ')}
              {s.error ? <span className="field-error"> error: {s.error}</span> : null}
            </li>
          );
        })}
      </ol>
      <details>
        <summary>Full trace (JSON)</summary>
        <pre className="json">{JSON.stringify(trace, null, 2)}</pre>
      </details>
    </>
  );
}

function MetricsCard({ id, refresh }: { id: string; refresh: number }) {
  const [m, setM] = useState<RuleMetrics | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    api<RuleMetrics>(`${ruleURL(id)}/metrics`)
      .then((r) => {
        if (!live) return;
        setM(r);
        setError(null);
      })
      .catch((e: unknown) => live && setError(e));
    return () => {
      live = false;
    };
  }, [id, refresh, n]);
  const ms = (ns?: number) => (ns ? `${formatNumber(ns / 1e6)} ms` : '—');
  return (
    <Card
      title="Metrics since start"
      actions={
        <Button variant="link" onClick={() => setN((x) => x + 1)}>
          Refresh
        </Button>
      }
    >
      <ErrorBanner error={error} />
      {m ? (
        <dl className="stats" style={{ display: 'grid', gridTemplateColumns: 'max-content 1fr', gap: '0.25rem 1rem', margin: 0 }}>
          <dt>Evaluated</dt>
          <dd>{formatNumber(m.evaluated ?? 0)}</dd>
          <dt>Matched</dt>
          <dd>{formatNumber(m.matched ?? 0)}</dd>
          <dt>Results</dt>
          <dd>{formatNumber(m.results ?? 0)}</dd>
          <dt>Errors</dt>
          <dd>{formatNumber(m.errors ?? 0)}</dd>
          <dt>Late inputs</dt>
          <dd>{formatNumber(m.late ?? 0)}</dd>
          <dt>Latency p50 / p99</dt>
          <dd>
            {ms(m.latency_p50_ns)} / {ms(m.latency_p99_ns)}
          </dd>
          {m.last_error ? (
            <>
              <dt>Last error</dt>
              <dd>{m.last_error}</dd>
            </>
          ) : null}
        </dl>
      ) : !error ? (
        <Spinner label="Loading metrics…" />
      ) : null}
    </Card>
  );
}

function VersionsCard({
  id,
  current,
  refresh,
  canRollback,
  onLoad,
  onRollback,
}: {
  id: string;
  current: number;
  refresh: number;
  canRollback: boolean;
  onLoad: (r: Rule) => void;
  onRollback: (version: number) => void;
}) {
  const [versions, setVersions] = useState<Rule[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [confirm, setConfirm] = useState<number | null>(null);
  useEffect(() => {
    let live = true;
    api<{ versions: Rule[] | null }>(`${ruleURL(id)}/versions`)
      .then((r) => {
        if (!live) return;
        setVersions([...(r.versions ?? [])].sort((a, b) => b.version - a.version));
        setError(null);
      })
      .catch((e: unknown) => live && setError(e));
    return () => {
      live = false;
    };
  }, [id, refresh]);
  const cols: Column<Rule>[] = [
    { key: 'version', header: 'Version', render: (v) => (v.version === current ? <strong>v{v.version} (current)</strong> : `v${v.version}`) },
    { key: 'when', header: 'Saved', render: (v) => formatTime(v.updated_at ?? v.created_at) },
    {
      key: 'statement',
      header: 'Statement',
      render: (v) => (
        <code title={v.statement} style={{ wordBreak: 'break-word' }}>
          {v.statement.length > 80 ? `${v.statement.slice(0, 80)}…` : v.statement}
        </code>
      ),
    },
    {
      key: 'do',
      header: 'Actions',
      render: (v) =>
        v.version === current ? null : (
          <span style={{ display: 'flex', flexWrap: 'wrap', gap: '0.25rem' }}>
            <Button variant="link" onClick={() => onLoad(v)} aria-label={`Load version ${v.version} into the editor`}>
              Load
            </Button>
            <Button
              variant="link"
              onClick={() => setConfirm(v.version)}
              disabled={!canRollback}
              aria-label={`Roll back to version ${v.version}`}
            >
              Roll back
            </Button>
          </span>
        ),
    },
  ];
  return (
    <Card title="Versions">
      <ErrorBanner error={error} />
      {versions ? (
        <Table caption="Versions" columns={cols} rows={versions} rowKey={(v) => String(v.version)} empty="No versions." />
      ) : !error ? (
        <Spinner label="Loading versions…" />
      ) : null}
      {confirm !== null ? (
        <Modal title={`Roll back to version ${confirm}?`} onClose={() => setConfirm(null)}>
          <p>The rule gets a new version equal to version {confirm}; the versions in between are kept.</p>
          <div style={buttonRow}>
            <Button onClick={() => setConfirm(null)}>Cancel</Button>
            <Button
              variant="primary"
              onClick={() => {
                const v = confirm;
                setConfirm(null);
                onRollback(v);
              }}
            >
              Roll back
            </Button>
          </div>
        </Modal>
      ) : null}
    </Card>
  );
}
