/**
 * The Resources panel's pure part: parsing what `kernelhub/resources` (this runtime's
 * memory, CPU, drive and GPUs) and `kernelhub/runtime` (the session and the GPU-hour
 * quota) answer, and the text shown for them. Free of JupyterLab imports for the unit
 * tests; resourcesPlugin.ts draws it. Parsers never throw: a poller must not break
 * the page, so anything malformed becomes null (shown as "—" or hidden).
 */

export const RESOURCES_POLL_SECONDS = 5;
export const RUNTIME_POLL_SECONDS = 30;

export interface IUsage {
  used: number | null;
  limit: number | null;
  source: string;
}

export interface IDrive {
  path: string;
  used: number | null;
  complete: boolean;
  free: number;
  total: number;
}

export interface IGpu {
  index: number;
  uuid: string;
  name: string;
  utilization: number;
  memory_used: number;
  memory_total: number;
}

export interface IResources {
  memory: IUsage;
  cpu: IUsage;
  drive: IDrive | null;
  gpus: IGpu[];
  gpu_problem: string;
  time: string;
}

export interface ISession {
  name: string;
  label: string;
  runtime_type: string;
  runtime_type_label: string;
  status: string;
  started: string | null;
  age: string;
  time_left: string;
  stop_at: string | null;
  idle_stop_at: string | null;
  idle_warning: boolean;
}

export interface IQuota {
  gpu_hours_week_used: number;
  gpu_hours_week_limit: number | null;
  gpu_hours_week_left: number | null;
  week_resets: string | null;
}

export interface IRuntimeInfo {
  hub: boolean;
  user: string;
  server: string;
  current: ISession | null;
  quota: IQuota | null;
  note: string;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function str(value: unknown, fallback = ''): string {
  return typeof value === 'string' ? value : fallback;
}

function usage(value: unknown): IUsage {
  const o = isObject(value) ? value : {};
  return { used: num(o.used), limit: num(o.limit), source: str(o.source) };
}

/** The resources in a response body; null when it is not one. */
export function parseResources(body: unknown): IResources | null {
  if (!isObject(body) || !isObject(body.memory)) {
    return null;
  }
  const d = body.drive;
  const drive: IDrive | null = isObject(d)
    ? {
        path: str(d.path),
        used: num(d.used),
        complete: d.complete === true,
        free: num(d.free) ?? 0,
        total: num(d.total) ?? 0
      }
    : null;
  const gpus = (Array.isArray(body.gpus) ? body.gpus : []).filter(isObject).map(g => ({
    index: num(g.index) ?? 0,
    uuid: str(g.uuid),
    name: str(g.name, 'GPU'),
    utilization: num(g.utilization) ?? 0,
    memory_used: num(g.memory_used) ?? 0,
    memory_total: num(g.memory_total) ?? 0
  }));
  return {
    memory: usage(body.memory),
    cpu: usage(body.cpu),
    drive,
    gpus,
    gpu_problem: str(body.gpu_problem),
    time: str(body.time)
  };
}

function session(value: unknown): ISession | null {
  if (!isObject(value)) {
    return null;
  }
  const nullableStr = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);
  return {
    name: str(value.name),
    label: str(value.label),
    runtime_type: str(value.runtime_type),
    runtime_type_label: str(value.runtime_type_label) || str(value.runtime_type),
    status: str(value.status),
    started: nullableStr(value.started),
    age: str(value.age),
    time_left: str(value.time_left),
    stop_at: nullableStr(value.stop_at),
    idle_stop_at: nullableStr(value.idle_stop_at),
    idle_warning: value.idle_warning === true
  };
}

/** `kernelhub/runtime`'s answer; null when malformed or outside a hub (hide the section). */
export function parseRuntimeInfo(body: unknown): IRuntimeInfo | null {
  if (!isObject(body) || body.hub !== true) {
    return null;
  }
  const q = body.quota;
  const used = isObject(q) ? num(q.gpu_hours_week_used) : null;
  const quota: IQuota | null =
    isObject(q) && used !== null
      ? {
          gpu_hours_week_used: used,
          gpu_hours_week_limit: num(q.gpu_hours_week_limit),
          gpu_hours_week_left: num(q.gpu_hours_week_left),
          week_resets: typeof q.week_resets === 'string' ? q.week_resets : null
        }
      : null;
  return {
    hub: true,
    user: str(body.user),
    server: str(body.server),
    current: session(body.current),
    quota,
    note: str(body.note)
  };
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

/**
 * Bytes for people, in binary units (1 GB = 1024³ bytes) written as JupyterLab's own
 * resource indicator and `free -h` do, with the short names people know: "312 MB",
 * "1.0 GB". Binary, because memory limits are set in binary units (512m = 512 MiB),
 * so a "512m" limit reads "512 MB", not "537 MB". One decimal below 10, none above.
 */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) {
    return '—';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) {
    return `${Math.round(value)} B`;
  }
  // 1023.9 MB would print as "1024 MB": step up instead
  if (Math.round(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`;
}

/** Cores: "0.35", "1.5", "2"; "—" when unknown. */
export function formatCores(cores: number | null | undefined): string {
  if (cores === null || cores === undefined || !Number.isFinite(cores) || cores < 0) {
    return '—';
  }
  if (Number.isInteger(cores)) {
    return String(cores);
  }
  return cores < 10 ? cores.toFixed(2).replace(/0$/, '') : cores.toFixed(1);
}

/** Hours: "3.5", "12", "0.25". */
export function formatHours(hours: number): string {
  const rounded = Math.round(hours * 100) / 100;
  return String(rounded);
}

/** used / limit as a fraction 0..1 for a bar; null without a limit. */
export function fraction(used: number | null, limit: number | null): number | null {
  if (used === null || limit === null || limit <= 0) {
    return null;
  }
  return Math.min(1, Math.max(0, used / limit));
}

export function memoryText(memory: IUsage): string {
  const limit = memory.limit === null ? 'no limit' : formatBytes(memory.limit);
  return `${formatBytes(memory.used)} / ${limit}`;
}

export function cpuText(cpu: IUsage): string {
  const limit = cpu.limit === null ? 'no limit' : `${formatCores(cpu.limit)} cores`;
  return `${formatCores(cpu.used)} / ${limit}`;
}

/** "1.2 GB used, 40 GB free of 100 GB"; "at least" when the walk stopped early. */
export function driveText(drive: IDrive): string {
  const used =
    drive.used === null
      ? 'size unknown'
      : `${drive.complete ? '' : 'at least '}${formatBytes(drive.used)} used`;
  return `${used}, ${formatBytes(drive.free)} free of ${formatBytes(drive.total)}`;
}

export function gpuText(gpu: IGpu): string {
  return (
    `${gpu.utilization}% · ` +
    `${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory_total)}`
  );
}

/** The compact indicator's text: "RAM 312 MB / 1.0 GB · Disk 1.2 GB". */
export function indicatorText(resources: IResources): string {
  const memory =
    resources.memory.limit === null
      ? formatBytes(resources.memory.used)
      : `${formatBytes(resources.memory.used)} / ${formatBytes(resources.memory.limit)}`;
  const parts = [`RAM ${memory}`];
  if (resources.drive && resources.drive.used !== null) {
    parts.push(`Disk ${resources.drive.complete ? '' : '≥'}${formatBytes(resources.drive.used)}`);
  }
  for (const gpu of resources.gpus) {
    parts.push(`GPU ${gpu.utilization}%`);
  }
  return parts.join(' · ');
}

/** Milliseconds until `iso`, or null for no (or a malformed) time. */
export function msUntil(iso: string | null, now: Date): number | null {
  if (!iso) {
    return null;
  }
  const at = Date.parse(iso);
  return Number.isNaN(at) ? null : at - now.getTime();
}

/** "M:SS" ("4:07", "25:00"); never negative. */
export function minutesSeconds(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

/** A duration for a countdown: "1 h 05 min", "12 min", "4:07" (under ten minutes). */
export function countdownText(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 600) {
    return minutesSeconds(ms);
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${String(minutes % 60).padStart(2, '0')} min`;
}

function clockTime(iso: string): string {
  const at = new Date(iso);
  return `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
}

/**
 * "Session: 3 h 12 min left (stops at 18:40)", counting down from stop_at; the hub's
 * own time_left text when there is no stop time; null when neither says anything.
 */
export function sessionText(current: ISession, now: Date): string | null {
  const ms = msUntil(current.stop_at, now);
  if (ms !== null && current.stop_at) {
    return `Session: ${countdownText(ms)} left (stops at ${clockTime(current.stop_at)})`;
  }
  return current.time_left ? `Session: ${current.time_left}` : null;
}

/** "Idle: stops in 4:07 unless you run something", only while the hub warns. */
export function idleText(current: ISession, now: Date): string | null {
  const ms = msUntil(current.idle_stop_at, now);
  if (!current.idle_warning || ms === null) {
    return null;
  }
  return `Idle: stops in ${minutesSeconds(ms)} unless you run something`;
}

/** "GPU hours this week: 3.5 of 10 h used, 6.5 h left" or "... no weekly GPU limit". */
export function quotaText(quota: IQuota): string {
  const used = formatHours(quota.gpu_hours_week_used);
  if (quota.gpu_hours_week_limit === null) {
    return `GPU hours this week: ${used} h used, no weekly GPU limit`;
  }
  const left =
    quota.gpu_hours_week_left ??
    Math.max(0, quota.gpu_hours_week_limit - quota.gpu_hours_week_used);
  return (
    `GPU hours this week: ${used} of ${formatHours(quota.gpu_hours_week_limit)} h used, ` +
    `${formatHours(left)} h left`
  );
}
