// Cards with the newest value of each key, updated live.
import { formatAgo, formatNumber, formatTime, Card } from '../../ui';
import type { Profile } from '../../types';
import { useDeviceLive } from './live';

export function LatestValues({ profile }: { profile: Profile | null }) {
  const { latest } = useDeviceLive();
  const keys = Object.keys(latest).sort();
  return (
    <Card title="Latest values">
      {keys.length === 0 ? (
        <p className="muted">No telemetry yet.</p>
      ) : (
        <ul className="value-grid" aria-live="polite" aria-atomic="false">
          {keys.map((k) => {
            const v = latest[k];
            const unit = profile?.telemetry?.[k]?.unit;
            return (
              <li key={k} className="value-card" data-testid="latest-value" data-key={k}>
                <span className="value-key">{k}</span>
                <span className="value-num">
                  {formatNumber(v.value)}
                  {unit ? <span className="unit"> {unit}</span> : null}
                </span>
                <time className="muted small" dateTime={v.ts} title={formatTime(v.ts)}>
                  {formatAgo(v.ts)}
                </time>
              </li>
            );
          })}
        </ul>
      )}
    </Card>
  );
}
