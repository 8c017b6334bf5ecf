// One device: its status and labels, live and historical telemetry,
// quarantined readings, shadow, commands, presence and credentials.
import { useEffect, useState } from 'react';
import { Link, useParams } from 'react-router-dom';
import { api, ApiError, roleAtLeast } from '../api';
import { useRole } from '../session';
import type { Device, Presence, Profile } from '../types';
import { Badge, ErrorBanner, Spinner, StatusBadge, formatAgo } from '../ui';
import { DeviceLiveContext, useDeviceStream } from './device/live';
import { LatestValues } from './device/Latest';
import { History, LiveChart } from './device/Charts';
import { Quarantine } from './device/Quarantine';
import { ShadowEditor } from './device/ShadowEditor';
import { Commands } from './device/Commands';
import { PresenceTimeline, presenceHistory } from './device/Presence';
import { Credentials } from './device/Credentials';

export function DevicePage() {
  const id = useParams().id ?? '';
  const role = useRole();
  const live = useDeviceStream(id);
  const [device, setDevice] = useState<Device | null>(null);
  const [presence, setPresence] = useState<Presence | null>(null);
  const [profile, setProfile] = useState<Profile | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let ok = true;
    setDevice(null);
    setProfile(null);
    setPresence(null);
    setError(null);
    const enc = encodeURIComponent(id);
    api<Device>(`/api/v1/devices/${enc}`)
      .then((d) => {
        if (!ok) return;
        setDevice(d);
        if (d.profile) {
          api<Profile>(`/api/v1/profiles/${encodeURIComponent(d.profile)}`)
            .then((p) => ok && setProfile(p))
            .catch(() => {});
        }
      })
      .catch((e: unknown) => ok && setError(e));
    api<Presence>(`/api/v1/devices/${enc}/presence`)
      .then((p) => ok && setPresence(p))
      .catch(() => {});
    return () => {
      ok = false;
    };
  }, [id]);

  if (error) {
    return (
      <>
        <p>
          <Link to="/devices">← Devices</Link>
        </p>
        <h1>{id}</h1>
        {error instanceof ApiError && error.status === 404 ? <p role="alert">There is no device {id}.</p> : <ErrorBanner error={error} />}
      </>
    );
  }
  if (!device) return <Spinner label="Loading device…" />;

  const current = presenceHistory(presence, live.presenceEvents)[0];
  return (
    <DeviceLiveContext.Provider value={live}>
      <p className="crumbs">
        <Link to="/devices">← Devices</Link>
      </p>
      <header className="device-head">
        <h1>
          {device.name && device.name !== device.id ? device.name : device.id}{' '}
          <span data-testid="device-status" aria-live="polite">
            <StatusBadge status={current?.status ?? device.status} />
          </span>
        </h1>
        <dl className="facts">
          <div>
            <dt>ID</dt>
            <dd>
              <code>{device.id}</code>
            </dd>
          </div>
          <div>
            <dt>Profile</dt>
            <dd>{device.profile ? `${profile?.name ? `${profile.name} (${device.profile})` : device.profile}` : 'none'}</dd>
          </div>
          <div>
            <dt>Last seen</dt>
            <dd>{device.last_seen_at ? formatAgo(device.last_seen_at) : 'never'}</dd>
          </div>
          <div>
            <dt>Labels</dt>
            <dd className="labels">
              {Object.keys(device.labels ?? {}).length === 0 ? <span className="muted">none</span> : null}
              {Object.entries(device.labels ?? {}).map(([k, v]) => (
                <Link key={k} to={`/devices?labels=${encodeURIComponent(`${k}=${v}`)}`} className="badge-link">
                  <Badge tone="info">
                    {k}={v}
                  </Badge>
                </Link>
              ))}
            </dd>
          </div>
          {device.refused_messages ? (
            <div>
              <dt>Refused messages</dt>
              <dd>{device.refused_messages}</dd>
            </div>
          ) : null}
        </dl>
      </header>
      <div className="grid">
        <LatestValues profile={profile} />
        <LiveChart />
        <History device={id} />
        <ShadowEditor device={id} />
        <Commands device={id} profile={profile} />
        <PresenceTimeline initial={presence} />
        <Quarantine device={id} />
        {roleAtLeast(role, 'admin') ? <Credentials device={id} /> : null}
      </div>
    </DeviceLiveContext.Provider>
  );
}
