// Sending a command and following it to its reply, and the device's
// recent commands.
import { useEffect, useState, type FormEvent } from 'react';
import { api, roleAtLeast } from '../../api';
import { useRole } from '../../session';
import { finalCommandStatuses, type Command, type CommandList, type Profile } from '../../types';
import { Button, Card, ErrorBanner, Field, StatusBadge, Table, formatTime } from '../../ui';
import { useDeviceLive } from './live';

const recentCount = 10;

/** Reads the newest commands of a device (the API lists oldest first). */
async function recentCommands(device: string): Promise<Command[]> {
  let all: Command[] = [];
  let after: number | undefined;
  for (let page = 0; page < 5; page++) {
    const q = after === undefined ? '' : `&after=${after}`;
    const l = await api<CommandList>(`/api/v1/devices/${encodeURIComponent(device)}/commands?limit=1000${q}`);
    all = [...all, ...l.commands].slice(-recentCount);
    if (!l.next_after) break;
    after = l.next_after;
  }
  return all.reverse();
}

/** The command's reply (or why it has none) as text. */
export function replyText(c: Command): string {
  if (c.result !== undefined && c.result !== null) return JSON.stringify(c.result, null, 2);
  if (c.reason) return c.reason;
  if (finalCommandStatuses.has(c.status)) return c.one_way ? '(one-way: no reply expected)' : '(no reply)';
  return '';
}

export function Commands({ device, profile }: { device: string; profile: Profile | null }) {
  const role = useRole();
  const canSend = roleAtLeast(role, 'operator');
  const { subscribe } = useDeviceLive();
  const [name, setName] = useState('');
  const [params, setParams] = useState('{}');
  const [sent, setSent] = useState<Command | null>(null);
  const [waiting, setWaiting] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [recent, setRecent] = useState<Command[]>([]);
  const defs = profile?.commands ?? {};
  const names = Object.keys(defs).sort();

  useEffect(() => {
    let live = true;
    recentCommands(device)
      .then((c) => live && setRecent(c))
      .catch(() => {});
    return () => {
      live = false;
    };
  }, [device]);

  useEffect(
    () =>
      subscribe('command', (c: Command) => {
        if (!c?.id) return;
        setSent((s) => (s && s.id === c.id && c.updated_at >= s.updated_at ? c : s));
        setRecent((r) => {
          const rest = r.filter((x) => x.id !== c.id);
          return [c, ...rest].sort((a, b) => b.seq - a.seq).slice(0, recentCount);
        });
      }),
    [subscribe],
  );

  const send = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    let p: unknown;
    try {
      p = params.trim() === '' ? undefined : JSON.parse(params);
    } catch (err) {
      setError(new Error(`params is not valid JSON: ${(err as Error).message}`));
      return;
    }
    setWaiting(true);
    setSent(null);
    try {
      const body: Record<string, unknown> = { name: name.trim() };
      if (p !== undefined) body.params = p;
      const c = await api<Command>(`/api/v1/devices/${encodeURIComponent(device)}/commands?wait=10s`, { method: 'POST', body });
      setSent((cur) => (cur && cur.id === c.id && cur.updated_at > c.updated_at ? cur : c));
      setRecent((r) => [c, ...r.filter((x) => x.id !== c.id)].slice(0, recentCount));
    } catch (err) {
      setError(err);
    } finally {
      setWaiting(false);
    }
  };

  const def = defs[name.trim()];
  const schemaProps = def?.params && typeof def.params.properties === 'object' ? Object.keys(def.params.properties as object) : [];

  return (
    <Card title="Commands">
      {canSend ? (
        <form onSubmit={send} className="command-form">
          <Field label="Command" hint={names.length ? `The profile defines: ${names.join(', ')}` : 'Any command name (the device has no profile commands).'}>
            {(id, desc) => (
              <>
                <input
                  id={id}
                  aria-describedby={desc}
                  list={`${id}-names`}
                  autoComplete="off"
                  required
                  value={name}
                  onChange={(e) => setName(e.target.value)}
                  data-testid="command-name"
                />
                <datalist id={`${id}-names`}>
                  {names.map((n) => (
                    <option key={n} value={n} />
                  ))}
                </datalist>
              </>
            )}
          </Field>
          <Field
            label="Parameters (JSON)"
            hint={schemaProps.length ? `Fields: ${schemaProps.join(', ')}` : def?.confirm ? 'This command waits for a confirmation.' : undefined}
          >
            {(id, desc) => (
              <textarea
                id={id}
                aria-describedby={desc}
                className="code"
                rows={3}
                spellCheck={false}
                value={params}
                onChange={(e) => setParams(e.target.value)}
                data-testid="command-params"
              />
            )}
          </Field>
          <div className="row-actions">
            <Button type="submit" variant="primary" busy={waiting} disabled={!name.trim()} data-testid="command-send">
              Send
            </Button>
          </div>
        </form>
      ) : (
        <p className="muted">Operators and admins may send commands.</p>
      )}
      <ErrorBanner error={error} />
      <div aria-live="polite" className="command-result">
        {waiting && !sent ? <p className="muted">Sent; waiting up to 10 s for the reply…</p> : null}
        {sent ? (
          <>
            <p>
              <strong>{sent.name}</strong>: <span data-testid="command-status" data-status={sent.status}>{sent.status.replace(/_/g, ' ')}</span>{' '}
              <StatusBadge status={sent.status} />
            </p>
            <pre className="json" data-testid="command-reply">
              {replyText(sent)}
            </pre>
          </>
        ) : null}
      </div>
      <h3>Recent commands</h3>
      <Table<Command>
        caption="Recent commands"
        rows={recent}
        rowKey={(c) => c.id}
        empty="No commands yet."
        columns={[
          { key: 'name', header: 'Command', render: (c) => <code>{c.name}</code> },
          { key: 'status', header: 'Status', render: (c) => <StatusBadge status={c.status} /> },
          { key: 'reply', header: 'Reply', render: (c) => <code className="clip">{replyText(c)}</code> },
          { key: 'source', header: 'Sent by', render: (c) => c.source },
          { key: 'at', header: 'Sent', render: (c) => formatTime(c.created_at) },
        ]}
      />
    </Card>
  );
}
