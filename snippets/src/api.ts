/**
 * The client of the server extension's REST API. It takes the function that sends a
 * request (ServerConnection.makeRequest in the app, a fake in the tests), so that all
 * it does (URLs, error messages, checking what the server sent) is plain logic.
 */
import {
  IListing,
  INewSnippet,
  IProblem,
  ISnippet,
  ISnippetCell,
  SOURCES
} from './types';

/** Sends one request; rejects only when the server could not be reached. */
export type RequestFn = (url: string, init: RequestInit) => Promise<Response>;

/** A failed call, with a message for people (the server's own when it sent one). */
export class SnippetsApiError extends Error {
  /** The HTTP status, or null when no reply came. */
  readonly status: number | null;

  constructor(message: string, status: number | null) {
    super(message);
    this.name = 'SnippetsApiError';
    this.status = status;
  }
}

export const API_PATH = 'kernelhub-snippets/snippets';

export class SnippetsClient {
  constructor(
    private readonly baseUrl: string,
    private readonly request: RequestFn
  ) {}

  /** Every snippet, merged by the server, and the files it skipped. */
  async list(): Promise<IListing> {
    return parseListing(await this.call('GET', '', 'load the snippets'));
  }

  /** Save cells as one of the user's snippets; resolves to the snippet as saved. */
  async save(snippet: INewSnippet): Promise<ISnippet> {
    const saved = parseSnippet(await this.call('POST', '', 'save the snippet', snippet));
    if (saved === null) {
      throw new SnippetsApiError('The server sent an invalid snippet back.', 201);
    }
    return saved;
  }

  /** Delete one of the user's snippets (built-in and site snippets cannot be). */
  async remove(id: string): Promise<void> {
    await this.call('DELETE', `/${encodeURIComponent(id)}`, 'delete the snippet');
  }

  private async call(
    method: string,
    path: string,
    doing: string,
    body?: unknown
  ): Promise<unknown> {
    const url = joinUrl(this.baseUrl, API_PATH) + path;
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await this.request(url, init);
    } catch (error) {
      const why = error instanceof Error && error.message ? `: ${error.message}` : '';
      throw new SnippetsApiError(`Could not ${doing}: the server did not answer${why}.`, null);
    }
    const text = await response.text();
    if (!response.ok) {
      throw new SnippetsApiError(
        `Could not ${doing}: ${errorMessage(response, text)}`,
        response.status
      );
    }
    if (response.status === 204 || text === '') {
      return null;
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new SnippetsApiError(
        `Could not ${doing}: the server's reply is not JSON.`,
        response.status
      );
    }
  }
}

/** The server's `{"message"}` when it sent one, else what the status means here. */
export function errorMessage(response: Response, text: string): string {
  const message = jsonMessage(text);
  if (message) {
    return message.endsWith('.') ? message : `${message}.`;
  }
  if (response.status === 404) {
    return 'the snippets server extension is not running on this server (HTTP 404).';
  }
  if (response.status === 403) {
    return 'this server does not let you use snippets (HTTP 403).';
  }
  const status = `${response.status} ${response.statusText}`.trim();
  return `the server answered HTTP ${status}.`;
}

function jsonMessage(text: string): string | null {
  try {
    const body: unknown = JSON.parse(text);
    if (isRecord(body) && typeof body.message === 'string' && body.message.trim()) {
      return body.message.trim();
    }
  } catch {
    // an HTML error page, a proxy's text...
  }
  return null;
}

export function joinUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
}

/**
 * A listing as the UI uses it. Anything malformed in the reply becomes a problem
 * instead of an error, so that one bad entry never breaks the panel.
 */
export function parseListing(body: unknown): IListing {
  if (!isRecord(body) || !Array.isArray(body.snippets)) {
    throw new SnippetsApiError('Could not load the snippets: the reply has no snippet list.', 200);
  }
  const snippets: ISnippet[] = [];
  const problems: IProblem[] = [];
  for (const entry of body.snippets) {
    const snippet = parseSnippet(entry);
    if (snippet) {
      snippets.push(snippet);
    } else {
      const id = isRecord(entry) && typeof entry.id === 'string' ? entry.id : '(no id)';
      problems.push({ source: 'server', path: id, reason: 'the server sent an invalid snippet' });
    }
  }
  for (const entry of Array.isArray(body.problems) ? body.problems : []) {
    if (isRecord(entry)) {
      problems.push({
        source: text(entry.source, 'unknown'),
        path: text(entry.path, '(unknown file)'),
        reason: text(entry.reason, 'unknown problem')
      });
    }
  }
  return { snippets, problems };
}

/** One snippet with every field present, or null when it lacks what the UI needs. */
export function parseSnippet(value: unknown): ISnippet | null {
  if (!isRecord(value) || typeof value.id !== 'string' || !value.id) {
    return null;
  }
  if (typeof value.title !== 'string' || !Array.isArray(value.cells)) {
    return null;
  }
  const cells: ISnippetCell[] = [];
  for (const cell of value.cells) {
    if (
      !isRecord(cell) ||
      (cell.cell_type !== 'code' && cell.cell_type !== 'markdown') ||
      typeof cell.source !== 'string'
    ) {
      return null;
    }
    cells.push({ cell_type: cell.cell_type, source: cell.source });
  }
  const source = SOURCES.find(s => s === value.source);
  if (source === undefined) {
    return null;
  }
  return {
    id: value.id,
    source,
    title: value.title,
    description: text(value.description, ''),
    tags: strings(value.tags),
    language: text(value.language, 'python'),
    category: text(value.category, 'General') || 'General',
    requires: strings(value.requires),
    cells
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, fallback: string): string {
  return typeof value === 'string' ? value : fallback;
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}
