// Shapes of the API's answers the dashboard reads (see
// internal/httpapi/openapi.json for the whole of each).

export type Value = number | boolean | string;

export interface Device {
  tenant_id: string;
  id: string;
  name: string;
  labels: Record<string, string> | null;
  metadata: Record<string, unknown> | null;
  profile: string;
  created_at: string;
  updated_at: string;
  last_seen_at: string | null;
  refused_messages: number;
  /** Present when the API includes the presence in device views. */
  status?: string;
  presence?: Presence;
}

export interface DeviceList {
  devices: Device[];
  next_cursor?: string;
}

export interface Presence {
  tenant_id?: string;
  device_id: string;
  status: 'online' | 'stale' | 'offline' | string;
  reason: string;
  since: string;
  seq: number;
  transport?: string;
}

export interface Sample {
  ts: string;
  value: Value;
}

export interface Series {
  key: string;
  samples: Sample[];
}

export interface TelemetryResult {
  device: string;
  from: string;
  to: string;
  agg?: string;
  bucket?: string;
  series: Series[];
}

export interface Latest {
  key: string;
  ts: string;
  value: Value;
}

export interface LatestValues {
  device: string;
  values: Latest[];
}

export interface QuarantinedPoint {
  key: string;
  ts: string;
  value: unknown;
  reason: string;
  message_id: string;
  received_at: string;
}

export interface QuarantineList {
  device: string;
  from: string;
  to: string;
  count: number;
  points: QuarantinedPoint[];
}

export interface Shadow {
  tenant_id?: string;
  device_id: string;
  name: string;
  state: { desired: Record<string, unknown> | null; reported: Record<string, unknown> | null; delta?: Record<string, unknown> };
  metadata?: unknown;
  version: number;
  updated_at: string;
}

export type CommandStatus =
  | 'awaiting_confirmation'
  | 'queued'
  | 'sent'
  | 'delivered'
  | 'succeeded'
  | 'failed'
  | 'expired'
  | 'rejected';

export interface Command {
  device_id: string;
  id: string;
  name: string;
  params?: unknown;
  one_way: boolean;
  seq: number;
  status: CommandStatus | string;
  reason?: string;
  source: string;
  result?: unknown;
  created_at: string;
  updated_at: string;
  history?: { status: string; reason?: string; at: string }[];
}

export interface CommandList {
  device: string;
  commands: Command[];
  next_after?: number;
}

export interface CommandDef {
  params?: Record<string, unknown>;
  roles?: string[];
  confirm?: boolean;
}

export interface Profile {
  id: string;
  name?: string;
  telemetry?: Record<string, { type?: string; unit?: string; min?: number; max?: number }>;
  report_interval?: string;
  commands?: Record<string, CommandDef>;
}

export interface ProfileList {
  profiles: Profile[];
  next_cursor?: string;
}

export interface Alert {
  id: string;
  rule_id: string;
  device_id: string;
  type: string;
  severity: 'info' | 'warning' | 'critical' | string;
  status: 'active' | 'acknowledged' | 'cleared' | string;
  message?: string;
  count: number;
  raised_at: string;
  last_seen_at: string;
}

export interface AlertList {
  alerts: Alert[];
  next_after?: string;
}

export interface Fleet {
  devices: { total: number; online: number; stale: number; offline: number };
  alerts: { active: number; acknowledged?: number };
  messages: { received: number; points: number };
  time: string;
}

export interface Stats {
  ingest: { accepted_messages: number; accepted_points: number };
  stored_points: number;
}

/** The final command statuses: nothing changes after them. */
export const finalCommandStatuses = new Set(['succeeded', 'failed', 'expired', 'rejected']);
