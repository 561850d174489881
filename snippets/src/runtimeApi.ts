/**
 * The Runtime menu's view of the runtime server extension (kernelhub/runtime, which
 * asks the hub with the runtime's own token): parsing its answers defensively, and the
 * texts the dialogs show. Plain logic, tested without a browser.
 */
import { errorMessage, joinUrl, RequestFn } from './api';

export interface IRuntimeType {
  name: string;
  displayName: string;
  description: string;
  memLimit: string;
  cpuLimit: number | null;
  gpus: number;
  available: boolean;
  reason: string;
}

export interface IRuntimeRow {
  name: string;
  label: string;
  runtimeType: string;
  runtimeTypeLabel: string;
  status: string;
  started: string | null;
  age: string;
  timeLeft: string;
  stopAt: string | null;
  url: string;
}

export interface IRuntimeInfo {
  hub: boolean;
  user: string;
  server: string;
  current: IRuntimeRow | null;
  runtimes: IRuntimeRow[];
  types: IRuntimeType[];
  defaultType: string;
}

/** A refusal or failure, with the hub's own message when it sent one. */
export class RuntimeApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null
  ) {
    super(message);
    this.name = 'RuntimeApiError';
  }
}

export const RUNTIME_PATH = 'kernelhub/runtime';

export class RuntimeClient {
  constructor(
    private readonly baseUrl: string,
    private readonly request: RequestFn
  ) {}

  async info(): Promise<IRuntimeInfo> {
    return parseInfo(await this.call('GET', '', 'read your runtimes'));
  }

  /** Ask the hub to switch this runtime; the switch page's URL, or null when unchanged. */
  async switchTo(runtimeType: string): Promise<string | null> {
    const answer = await this.call('POST', '/switch', 'change the runtime type', {
      runtime_type: runtimeType
    });
    return isRecord(answer) && typeof answer.switch_url === 'string' ? answer.switch_url : null;
  }

  async stop(server: string): Promise<void> {
    await this.call('POST', '/stop', 'stop the runtime', { server });
  }

  private async call(method: string, path: string, doing: string, body?: unknown): Promise<unknown> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await this.request(joinUrl(this.baseUrl, RUNTIME_PATH) + path, init);
    } catch {
      throw new RuntimeApiError(`Could not ${doing}: this runtime did not answer.`, null);
    }
    const text = await response.text();
    if (!response.ok) {
      throw new RuntimeApiError(errorMessage(response, text), response.status);
    }
    try {
      return text ? (JSON.parse(text) as unknown) : null;
    } catch {
      throw new RuntimeApiError(`Could not ${doing}: the answer is not JSON.`, response.status);
    }
  }
}

export function parseInfo(body: unknown): IRuntimeInfo {
  if (!isRecord(body) || body.hub !== true) {
    return { hub: false, user: '', server: '', current: null, runtimes: [], types: [], defaultType: '' };
  }
  const runtimes = list(body.runtimes).map(parseRow).filter((r): r is IRuntimeRow => r !== null);
  const types = list(body.types).map(parseType).filter((t): t is IRuntimeType => t !== null);
  return {
    hub: true,
    user: text(body.user),
    server: text(body.server),
    current: parseRow(body.current),
    runtimes,
    types,
    defaultType: text(body.default_type)
  };
}

export function parseRow(value: unknown): IRuntimeRow | null {
  if (!isRecord(value) || typeof value.name !== 'string') {
    return null;
  }
  return {
    name: value.name,
    label: text(value.label) || value.name || 'Default',
    runtimeType: text(value.runtime_type),
    runtimeTypeLabel: text(value.runtime_type_label),
    status: text(value.status) || 'unknown',
    started: typeof value.started === 'string' ? value.started : null,
    age: text(value.age),
    timeLeft: text(value.time_left),
    stopAt: typeof value.stop_at === 'string' ? value.stop_at : null,
    url: text(value.url)
  };
}

export function parseType(value: unknown): IRuntimeType | null {
  if (!isRecord(value) || typeof value.name !== 'string' || !value.name) {
    return null;
  }
  return {
    name: value.name,
    displayName: text(value.display_name) || value.name,
    description: text(value.description),
    memLimit: text(value.mem_limit),
    cpuLimit: typeof value.cpu_limit === 'number' ? value.cpu_limit : null,
    gpus: typeof value.gpus === 'number' ? value.gpus : 0,
    available: value.available === true,
    reason: text(value.reason)
  };
}

/** "4G RAM · 2 CPUs · 1 GPU": what a type gives, as the hub's form says it. */
export function typeLimits(type: IRuntimeType): string {
  const parts: string[] = [];
  if (type.memLimit) {
    parts.push(`${type.memLimit} RAM`);
  }
  if (type.cpuLimit !== null) {
    parts.push(`${type.cpuLimit} ${type.cpuLimit === 1 ? 'CPU' : 'CPUs'}`);
  }
  parts.push(type.gpus > 0 ? `${type.gpus} ${type.gpus === 1 ? 'GPU' : 'GPUs'}` : 'no GPU');
  return parts.join(' · ');
}

/** The type the dialog starts on: this runtime's, else the hub's default. */
export function currentTypeName(info: IRuntimeInfo): string {
  return info.current?.runtimeType || info.defaultType;
}

/** Where the notebook reopens: the page now open, on the same server (same path). */
export function switchUrl(switchPage: string, pathname: string, search: string): string {
  const next = pathname + search;
  return `${switchPage}?next=${encodeURIComponent(next)}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}
