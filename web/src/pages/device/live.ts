// The device page's one live stream subscription, shared by its sections.
import { createContext, useContext, useEffect, useMemo, useRef, useState } from 'react';
import { api, openStream, type StreamMessage, type TelemetryPoint } from '../../api';
import { Rolling, type Aligned } from '../../timeseries';
import type { LatestValues, Presence, TelemetryResult, Value } from '../../types';

/** How much the live chart shows. */
export const liveWindowMs = 5 * 60_000;
/** How often queued live points are drawn, at most. */
export const flushMs = 250;

export interface LatestValue {
  value: Value | unknown;
  ts: string;
}

type Handler = (data: any, time: string) => void;

export interface DeviceLive {
  latest: Record<string, LatestValue>;
  live: { keys: string[]; data: Aligned };
  presenceEvents: Presence[];
  connected: boolean;
  dropped: number;
  /** Calls fn with the data of each event of kind; returns an unsubscribe. */
  subscribe: (kind: 'shadow' | 'command' | 'alert' | 'presence', fn: Handler) => () => void;
}

const empty: DeviceLive = {
  latest: {},
  live: { keys: [], data: [[]] },
  presenceEvents: [],
  connected: false,
  dropped: 0,
  subscribe: () => () => {},
};

export const DeviceLiveContext = createContext<DeviceLive>(empty);

export function useDeviceLive(): DeviceLive {
  return useContext(DeviceLiveContext);
}

/** Merges newer values into latest, keeping whichever of each key is newer. */
export function mergeLatest(latest: Record<string, LatestValue>, points: { key: string; ts: string; value: unknown }[]): Record<string, LatestValue> {
  let out = latest;
  for (const p of points) {
    const cur = out[p.key];
    if (cur && Date.parse(cur.ts) > Date.parse(p.ts)) continue;
    if (out === latest) out = { ...latest };
    out[p.key] = { value: p.value, ts: p.ts };
  }
  return out;
}

/**
 * Subscribes to every event of device id: telemetry feeds the latest values
 * and the live chart (batched, at most every flushMs), presence events are
 * collected, and shadow, command and alert events go to subscribers.
 */
export function useDeviceStream(id: string): DeviceLive {
  const [latest, setLatest] = useState<Record<string, LatestValue>>({});
  const [live, setLive] = useState<{ keys: string[]; data: Aligned }>({ keys: [], data: [[]] });
  const [presenceEvents, setPresenceEvents] = useState<Presence[]>([]);
  const [connected, setConnected] = useState(false);
  const [dropped, setDropped] = useState(0);
  const handlers = useRef(new Map<string, Set<Handler>>());
  const rolling = useRef(new Rolling(liveWindowMs));

  useEffect(() => {
    let live = true;
    rolling.current = new Rolling(liveWindowMs);
    setLatest({});
    setLive({ keys: [], data: [[]] });
    setPresenceEvents([]);
    setDropped(0);
    let pending: TelemetryPoint[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;

    const draw = () => {
      rolling.current.trim(Date.now());
      setLive(rolling.current.aligned());
    };
    const flush = () => {
      timer = undefined;
      if (!live) return;
      const pts = pending;
      pending = [];
      if (pts.length) {
        setLatest((l) => mergeLatest(l, pts));
        for (const p of pts) rolling.current.add(p.key, Date.parse(p.ts), p.value);
      }
      draw();
    };
    // The window rolls on even when the device is silent.
    const roll = setInterval(draw, 5000);

    const onMessage = (m: StreamMessage) => {
      if (m.type === 'status') {
        setConnected(m.connected);
        return;
      }
      if (m.type === 'lagging') {
        setDropped((d) => d + (m.dropped || 0));
        return;
      }
      if (m.type !== 'event' || m.device !== id) return;
      if (m.kind === 'telemetry') {
        const pts = (m.data?.points ?? []) as TelemetryPoint[];
        pending.push(...pts);
        if (!timer) timer = setTimeout(flush, flushMs);
        return;
      }
      if (m.kind === 'presence' && m.data) {
        setPresenceEvents((ev) => [...ev, m.data as Presence].slice(-100));
      }
      for (const fn of handlers.current.get(m.kind) ?? []) fn(m.data, m.time);
    };
    const close = openStream({ devices: [id] }, onMessage);

    // Seed the latest values and the live window from storage, so the
    // page is not empty until the device next speaks.
    const enc = encodeURIComponent(id);
    api<LatestValues>(`/api/v1/devices/${enc}/latest`)
      .then((l) => live && setLatest((cur) => mergeLatest(Object.fromEntries(l.values.map((v) => [v.key, { value: v.value, ts: v.ts }])), Object.entries(cur).map(([key, v]) => ({ key, ...v })))))
      .catch(() => {});
    const from = new Date(Date.now() - liveWindowMs).toISOString();
    api<TelemetryResult>(`/api/v1/devices/${enc}/telemetry?from=${encodeURIComponent(from)}&agg=avg&bucket=1s&limit=1000`)
      .then((r) => {
        if (!live) return;
        for (const s of r.series) for (const p of s.samples) rolling.current.add(s.key, Date.parse(p.ts), p.value);
        draw();
      })
      .catch(() => {});

    return () => {
      live = false;
      clearTimeout(timer);
      clearInterval(roll);
      close();
    };
  }, [id]);

  const subscribe = useMemo(
    () => (kind: string, fn: Handler) => {
      let set = handlers.current.get(kind);
      if (!set) {
        set = new Set();
        handlers.current.set(kind, set);
      }
      set.add(fn);
      return () => {
        set.delete(fn);
      };
    },
    [],
  );

  return { latest, live, presenceEvents, connected, dropped, subscribe };
}
