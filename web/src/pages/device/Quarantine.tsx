// The device's quarantined readings: points refused by its profile's
// telemetry schema.
import { useEffect, useState } from 'react';
import { api, ApiError } from '../../api';
import type { QuarantineList, QuarantinedPoint } from '../../types';
import { Badge, Button, Card, ErrorBanner, Table, formatNumber, formatTime } from '../../ui';

export function Quarantine({ device }: { device: string }) {
  const [list, setList] = useState<QuarantineList | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [reload, setReload] = useState(0);

  useEffect(() => {
    const ctl = new AbortController();
    api<QuarantineList>(`/api/v1/devices/${encodeURIComponent(device)}/quarantine?limit=50`, { signal: ctl.signal })
      .then((l) => {
        setList(l);
        setError(null);
      })
      .catch((e: unknown) => {
        if (ctl.signal.aborted) return;
        if (e instanceof ApiError && e.status === 503) setList({ device, from: '', to: '', count: 0, points: [] });
        else setError(e);
      });
    return () => ctl.abort();
  }, [device, reload]);

  return (
    <Card
      title="Quarantined readings"
      actions={
        <Button onClick={() => setReload((n) => n + 1)} aria-label="Reload quarantined readings">
          Reload
        </Button>
      }
    >
      <ErrorBanner error={error} />
      {list ? (
        <>
          <p className="muted small">
            {list.count === 0 ? 'None in the last 24 hours.' : `${list.count} in all; the newest ${list.points.length} of the last 24 hours:`}
          </p>
          {list.points.length ? (
            <Table<QuarantinedPoint>
              caption="Quarantined readings"
              rows={list.points}
              rowKey={(p) => `${p.message_id}/${p.key}/${p.ts}`}
              columns={[
                { key: 'key', header: 'Key', render: (p) => p.key },
                { key: 'value', header: 'Value', render: (p) => <code>{formatNumber(p.value)}</code> },
                { key: 'reason', header: 'Reason', render: (p) => <Badge tone="warn">{p.reason.replace(/_/g, ' ')}</Badge> },
                { key: 'ts', header: 'Time', render: (p) => formatTime(p.ts) },
              ]}
            />
          ) : null}
        </>
      ) : null}
    </Card>
  );
}
