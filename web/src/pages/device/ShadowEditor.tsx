// The device's classic shadow: reported state, and desired state that an
// operator may edit and save, guarded by the shadow's version.
import { useEffect, useRef, useState } from 'react';
import { api, ApiError, roleAtLeast } from '../../api';
import { useRole } from '../../session';
import type { Shadow } from '../../types';
import { Button, Card, ErrorBanner, Field, formatTime } from '../../ui';
import { useDeviceLive } from './live';

type JSONObject = Record<string, unknown>;

function isObject(v: unknown): v is JSONObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function equal(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The JSON merge patch (RFC 7386) that turns from into to: removed fields
 * are null, nested objects are patched field by field.
 */
export function mergePatch(from: JSONObject, to: JSONObject): JSONObject {
  const patch: JSONObject = {};
  for (const k of Object.keys(from)) {
    if (!(k in to)) patch[k] = null;
  }
  for (const [k, v] of Object.entries(to)) {
    const old = from[k];
    if (isObject(old) && isObject(v)) {
      const sub = mergePatch(old, v);
      if (Object.keys(sub).length) patch[k] = sub;
    } else if (!(k in from) || !equal(old, v)) {
      patch[k] = v;
    }
  }
  return patch;
}

const pretty = (v: unknown) => JSON.stringify(v ?? {}, null, 2);

export function ShadowEditor({ device }: { device: string }) {
  const role = useRole();
  const canEdit = roleAtLeast(role, 'operator');
  const { subscribe } = useDeviceLive();
  const [shadow, setShadow] = useState<Shadow | null>(null);
  const [text, setText] = useState('');
  const [dirty, setDirty] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState('');
  const [lost, setLost] = useState('');
  const [busy, setBusy] = useState(false);
  const dirtyRef = useRef(false);
  dirtyRef.current = dirty;
  const path = `/api/v1/devices/${encodeURIComponent(device)}/shadow`;

  // The newest version seen wins: the stream may bring the device's
  // answer to a save before the save's own response arrives.
  const newest = useRef<Shadow | null>(null);
  // base is the shadow the text was taken from: an edit is a change of
  // its desired state.
  const base = useRef<Shadow | null>(null);
  const show = (s: Shadow, replaceText: boolean) => {
    const cur = newest.current;
    const n = cur && cur.device_id === s.device_id && cur.version > s.version ? cur : s;
    newest.current = n;
    setShadow(n);
    if (replaceText) {
      base.current = n;
      setText(pretty(n.state.desired));
      setDirty(false);
    }
  };

  const load = async (): Promise<Shadow | null> => {
    try {
      const s = await api<Shadow>(path);
      setError(null);
      return s;
    } catch (e) {
      setError(e);
      return null;
    }
  };

  useEffect(() => {
    let live = true;
    newest.current = null;
    void load().then((s) => live && s && show(s, true));
    return () => {
      live = false;
    };
  }, [device]);

  // Another writer (the device reporting, another operator) changes the
  // shadow: show it, and the desired state too unless it is being edited.
  useEffect(
    () =>
      subscribe('shadow', (data: Shadow) => {
        if (!data?.state || (data.name ?? '') !== '') return;
        show(data, !dirtyRef.current);
      }),
    [subscribe],
  );

  const save = async () => {
    if (!shadow) return;
    setNotice('');
    setLost('');
    setError(null);
    let edited: unknown;
    try {
      edited = text.trim() === '' ? {} : JSON.parse(text);
    } catch (e) {
      setError(new Error(`desired is not valid JSON: ${(e as Error).message}`));
      return;
    }
    if (!isObject(edited)) {
      setError(new Error('desired must be a JSON object'));
      return;
    }
    const from = base.current ?? shadow;
    const now = newest.current ?? shadow;
    // The device reporting meanwhile is no conflict: only a change of
    // desired since the edit began is, and then the version sent is the
    // old one so that the server refuses the save.
    const version = equal(from.state.desired, now.state.desired) ? now.version : from.version;
    const patch = mergePatch(from.state.desired ?? {}, edited);
    if (Object.keys(patch).length === 0) {
      setNotice('Nothing changed.');
      setDirty(false);
      return;
    }
    setBusy(true);
    try {
      const s = await api<Shadow>(path, {
        method: 'PATCH',
        body: { state: { desired: patch } },
        headers: { 'If-Match': `"${version}"` },
      });
      show(s, true);
      setNotice(`Saved as version ${s.version}.`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        const s = await load();
        if (s) show(s, true);
        setLost(text);
        setNotice('The shadow changed meanwhile, reloaded: your edit was not saved. Apply it again to the new version.');
      } else {
        setError(e);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title="Shadow">
      <ErrorBanner error={error} />
      {shadow ? (
        <p className="muted small">
          Version {shadow.version}
          {shadow.version ? ` · updated ${formatTime(shadow.updated_at)}` : ' · never written'}
        </p>
      ) : null}
      <div className="two-col">
        <div>
          <h3>Reported</h3>
          <pre className="json" data-testid="shadow-reported" tabIndex={0} aria-label="Reported state">
            {pretty(shadow?.state.reported)}
          </pre>
          {shadow?.state.delta && Object.keys(shadow.state.delta).length ? (
            <>
              <h3>Delta (desired, not yet reported)</h3>
              <pre className="json" data-testid="shadow-delta">
                {pretty(shadow.state.delta)}
              </pre>
            </>
          ) : null}
        </div>
        <div>
          <Field label="Desired" hint={canEdit ? 'A JSON object; removed fields are deleted.' : 'Operators and admins may edit it.'}>
            {(id, desc) => (
              <textarea
                id={id}
                aria-describedby={desc}
                className="code"
                rows={10}
                spellCheck={false}
                value={text}
                readOnly={!canEdit}
                onChange={(e) => {
                  setText(e.target.value);
                  setDirty(true);
                }}
                data-testid="shadow-desired"
              />
            )}
          </Field>
          {canEdit ? (
            <div className="row-actions">
              <Button
                onClick={() => {
                  if (shadow) show(shadow, true);
                  setNotice('');
                }}
                disabled={!dirty}
              >
                Discard
              </Button>
              <Button variant="primary" onClick={save} busy={busy} disabled={!shadow} data-testid="shadow-save">
                Save desired
              </Button>
            </div>
          ) : null}
          <div aria-live="polite">
            {notice ? (
              <p className="notice" role="status" data-testid="shadow-notice">
                {notice}
              </p>
            ) : null}
          </div>
          {lost ? (
            <details>
              <summary>Your unsaved edit</summary>
              <pre className="json">{lost}</pre>
            </details>
          ) : null}
        </div>
      </div>
    </Card>
  );
}
