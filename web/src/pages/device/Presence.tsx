// The device's presence now and as it changed while the page was open.
import type { Presence } from '../../types';
import { Card, StatusBadge, formatAgo, formatTime } from '../../ui';
import { useDeviceLive } from './live';

/** Merges the first read and the stream's events, newest first, one per seq. */
export function presenceHistory(initial: Presence | null, events: Presence[]): Presence[] {
  const bySeq = new Map<string, Presence>();
  for (const p of initial ? [initial, ...events] : events) bySeq.set(`${p.seq}/${p.since}`, p);
  return [...bySeq.values()].sort((a, b) => b.seq - a.seq || Date.parse(b.since) - Date.parse(a.since));
}

export function PresenceTimeline({ initial }: { initial: Presence | null }) {
  const { presenceEvents } = useDeviceLive();
  const history = presenceHistory(initial, presenceEvents);
  const current = history[0];
  const now = Date.now();
  // The strip spans from the oldest known change to now.
  const oldest = history.length ? Date.parse(history[history.length - 1].since) : now;
  const span = Math.max(1, now - oldest);
  const segments = [...history].reverse().map((p, i, all) => {
    const start = Date.parse(p.since);
    const end = i + 1 < all.length ? Date.parse(all[i + 1].since) : now;
    return { p, width: Math.max(0.5, ((end - start) / span) * 100) };
  });
  return (
    <Card title="Presence">
      {current ? (
        <p aria-live="polite" data-testid="presence-current">
          <StatusBadge status={current.status} /> since {formatTime(current.since)} ({formatAgo(current.since)}) · reason{' '}
          <code>{current.reason}</code>
          {current.transport ? ` · over ${current.transport}` : ''}
        </p>
      ) : (
        <p className="muted">Unknown.</p>
      )}
      {segments.length > 1 ? (
        <div className="presence-strip" aria-hidden="true">
          {segments.map(({ p, width }) => (
            <span key={`${p.seq}/${p.since}`} className={`seg seg-${p.status}`} style={{ width: `${width}%` }} title={`${p.status} from ${formatTime(p.since)}`} />
          ))}
        </div>
      ) : null}
      {history.length > 1 ? (
        <ol className="timeline" aria-label="Presence changes, newest first">
          {history.map((p) => (
            <li key={`${p.seq}/${p.since}`}>
              <time dateTime={p.since}>{formatTime(p.since)}</time> <StatusBadge status={p.status} /> <span className="muted">{p.reason.replace(/_/g, ' ')}</span>
            </li>
          ))}
        </ol>
      ) : (
        <p className="muted small">Changes appear here while this page is open.</p>
      )}
    </Card>
  );
}
