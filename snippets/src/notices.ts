/**
 * Which of kernelhub's quota notices the notebook shows: the pure part of
 * noticesPlugin.ts (a warning before an idle or session-length stop, another runtime
 * stopped, GPU runtimes blocked), kept free of JupyterLab imports for the unit tests.
 */

/** One notice as the runtime's endpoint returns it. */
export interface IQuotaNotice {
  id: string;
  kind: 'warn' | 'stop' | 'flag';
  title: string;
  time: string;
  message: string;
  server: string;
  this_server: boolean;
}

export const POLL_SECONDS = 60;

/**
 * The notices worth a notification now, oldest first: warnings about this runtime,
 * stops of the user's other runtimes since the page opened (older ones are on the
 * hub home page), and a GPU block; each once (``shown`` remembers the ids).
 */
export function noticesToShow(
  notices: readonly IQuotaNotice[],
  shown: ReadonlySet<string>,
  openedAt: Date
): IQuotaNotice[] {
  const fresh = notices.filter(notice => {
    if (shown.has(notice.id)) {
      return false;
    }
    switch (notice.kind) {
      case 'warn':
        return notice.this_server;
      case 'stop':
        return !notice.this_server && new Date(notice.time) >= openedAt;
      case 'flag':
        return true;
      default:
        return false;
    }
  });
  return fresh.reverse(); // the hub lists newest first
}

/** The notices in a response body; [] for anything else (a poller must never throw). */
export function parseNotices(body: unknown): IQuotaNotice[] {
  const list = (body as { notices?: unknown } | null)?.notices;
  if (!Array.isArray(list)) {
    return [];
  }
  return list.filter(
    (n): n is IQuotaNotice =>
      typeof n === 'object' &&
      n !== null &&
      typeof n.id === 'string' &&
      typeof n.kind === 'string' &&
      typeof n.message === 'string'
  );
}
