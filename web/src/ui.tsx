// A small kit of UI pieces shared by every page. Styles live in styles.css.
import { useEffect, useId, useRef, type ButtonHTMLAttributes, type ReactNode } from 'react';
import { ApiError } from './api';

type ButtonProps = ButtonHTMLAttributes<HTMLButtonElement> & {
  variant?: 'primary' | 'secondary' | 'danger' | 'link';
  busy?: boolean;
};

/** A button; type defaults to "button" so it never submits by surprise. */
export function Button({ variant = 'secondary', busy, className, children, disabled, type, ...rest }: ButtonProps) {
  return (
    <button
      type={type ?? 'button'}
      className={['btn', `btn-${variant}`, className].filter(Boolean).join(' ')}
      disabled={disabled || busy}
      aria-busy={busy || undefined}
      {...rest}
    >
      {busy ? <Spinner small label="" /> : null}
      {children}
    </button>
  );
}

/**
 * A labelled form control. children is a function given the id to put
 * on the control, so the label is always tied to it.
 */
export function Field({
  label,
  hint,
  error,
  className,
  children,
}: {
  label: ReactNode;
  hint?: ReactNode;
  error?: ReactNode;
  className?: string;
  children: (id: string, describedBy: string | undefined) => ReactNode;
}) {
  const id = useId();
  const hintId = hint ? `${id}-hint` : undefined;
  const errId = error ? `${id}-err` : undefined;
  const describedBy = [hintId, errId].filter(Boolean).join(' ') || undefined;
  return (
    <div className={['field', className].filter(Boolean).join(' ')}>
      <label htmlFor={id}>{label}</label>
      {children(id, describedBy)}
      {hint ? (
        <small id={hintId} className="hint">
          {hint}
        </small>
      ) : null}
      {error ? (
        <small id={errId} className="field-error">
          {error}
        </small>
      ) : null}
    </div>
  );
}

export interface Column<T> {
  key: string;
  header: ReactNode;
  render: (row: T) => ReactNode;
  className?: string;
}

/** A table that scrolls sideways on narrow screens. */
export function Table<T>({
  columns,
  rows,
  rowKey,
  caption,
  empty = 'Nothing here yet.',
  rowProps,
}: {
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T) => string;
  caption?: ReactNode;
  empty?: ReactNode;
  rowProps?: (row: T) => Record<string, string | undefined>;
}) {
  return (
    <div className="table-wrap" tabIndex={0} role="region" aria-label={typeof caption === 'string' ? caption : 'table'}>
      <table>
        {caption ? <caption>{caption}</caption> : null}
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.key} scope="col" className={c.className}>
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 ? (
            <tr>
              <td colSpan={columns.length} className="empty">
                {empty}
              </td>
            </tr>
          ) : (
            rows.map((r) => (
              <tr key={rowKey(r)} {...(rowProps ? rowProps(r) : {})}>
                {columns.map((c) => (
                  <td key={c.key} className={c.className} data-label={typeof c.header === 'string' ? c.header : undefined}>
                    {c.render(r)}
                  </td>
                ))}
              </tr>
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}

export type Tone = 'ok' | 'warn' | 'bad' | 'info' | 'muted';

/** A small coloured label. */
export function Badge({ tone = 'muted', children, title }: { tone?: Tone; children: ReactNode; title?: string }) {
  return (
    <span className={`badge badge-${tone}`} title={title}>
      {children}
    </span>
  );
}

const statusTones: Record<string, Tone> = {
  online: 'ok',
  stale: 'warn',
  offline: 'bad',
  active: 'bad',
  firing: 'bad',
  acknowledged: 'warn',
  cleared: 'ok',
  resolved: 'ok',
  pending: 'info',
  sent: 'info',
  delivered: 'info',
  queued: 'info',
  succeeded: 'ok',
  success: 'ok',
  completed: 'ok',
  done: 'ok',
  failed: 'bad',
  rejected: 'bad',
  expired: 'bad',
  timeout: 'bad',
  timed_out: 'bad',
  enabled: 'ok',
  disabled: 'muted',
};

/** A badge coloured by a status word (device, alert or command status). */
export function StatusBadge({ status }: { status: string | undefined | null }) {
  const s = status || 'unknown';
  return <Badge tone={statusTones[s] ?? 'muted'}>{s.replace(/_/g, ' ')}</Badge>;
}

/** Shows an error (an ApiError's detail, or any message) as an alert. */
export function ErrorBanner({ error, onDismiss }: { error: unknown; onDismiss?: () => void }) {
  if (!error) return null;
  return (
    <div className="banner banner-error" role="alert">
      <span>{errorMessage(error)}</span>
      {onDismiss ? (
        <button type="button" className="btn btn-link" onClick={onDismiss} aria-label="Dismiss error">
          ×
        </button>
      ) : null}
    </div>
  );
}

/** A short human message for an error. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.detail || error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

/** A busy indicator; label is read by screen readers. */
export function Spinner({ label = 'Loading…', small }: { label?: string; small?: boolean }) {
  return (
    <span className={small ? 'spinner-wrap small' : 'spinner-wrap'} role={label ? 'status' : undefined}>
      <span className="spinner" aria-hidden="true" />
      {label ? <span className="spinner-label">{label}</span> : null}
    </span>
  );
}

/** Formats a timestamp in the viewer's locale; "—" when absent. */
export function formatTime(t: string | number | Date | undefined | null, withSeconds = true): string {
  if (t === undefined || t === null || t === '') return '—';
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return '—';
  return d.toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: withSeconds ? '2-digit' : undefined,
  });
}

/** Formats how long ago t was, e.g. "5 s ago", "3 min ago". */
export function formatAgo(t: string | number | Date | undefined | null, now = Date.now()): string {
  if (t === undefined || t === null || t === '') return '—';
  const ms = now - new Date(t).getTime();
  if (Number.isNaN(ms)) return '—';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Formats a number compactly for cards (at most 3 decimals). */
export function formatNumber(v: unknown): string {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return String(v);
    return Math.abs(v) >= 1000 ? v.toLocaleString(undefined, { maximumFractionDigits: 1 }) : String(Math.round(v * 1000) / 1000);
  }
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v === null || v === undefined) return '—';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** A titled block of a page. */
export function Card({ title, actions, children, className, id }: { title?: ReactNode; actions?: ReactNode; children: ReactNode; className?: string; id?: string }) {
  const hid = useId();
  return (
    <section className={['card', className].filter(Boolean).join(' ')} aria-labelledby={title ? hid : undefined} id={id}>
      {title || actions ? (
        <header className="card-head">
          {title ? <h2 id={hid}>{title}</h2> : null}
          {actions ? <div className="card-actions">{actions}</div> : null}
        </header>
      ) : null}
      {children}
    </section>
  );
}

/**
 * A modal dialog: focus moves into it, Escape or the backdrop closes it,
 * Tab stays inside, and focus returns to where it was on close.
 */
export function Modal({ title, onClose, children }: { title: ReactNode; onClose: () => void; children: ReactNode }) {
  const hid = useId();
  const box = useRef<HTMLDivElement>(null);
  const close = useRef(onClose);
  close.current = onClose;
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const el = box.current;
    const focusable = () =>
      Array.from(
        el?.querySelectorAll<HTMLElement>('button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])') ?? [],
      ).filter((n) => !n.hasAttribute('disabled'));
    (focusable()[0] ?? el)?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') {
        e.stopPropagation();
        close.current();
      } else if (e.key === 'Tab') {
        const f = focusable();
        if (f.length === 0) return;
        const first = f[0];
        const last = f[f.length - 1];
        if (e.shiftKey && document.activeElement === first) {
          e.preventDefault();
          last.focus();
        } else if (!e.shiftKey && document.activeElement === last) {
          e.preventDefault();
          first.focus();
        }
      }
    };
    document.addEventListener('keydown', onKey);
    return () => {
      document.removeEventListener('keydown', onKey);
      before?.focus?.();
    };
  }, []);
  return (
    <div className="modal-backdrop" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div className="modal" role="dialog" aria-modal="true" aria-labelledby={hid} ref={box} tabIndex={-1}>
        <h2 id={hid}>{title}</h2>
        {children}
      </div>
    </div>
  );
}
