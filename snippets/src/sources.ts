import { SnippetSource } from './types';

/** How the UI names each source (a badge next to every snippet). */
const LABELS: Record<SnippetSource, string> = {
  builtin: 'built-in',
  site: 'site',
  user: 'yours'
};

const DESCRIPTIONS: Record<SnippetSource, string> = {
  builtin: 'Built into kernelhub',
  site: 'Site-wide: added by the hub admin',
  user: 'Yours: saved on your drive (~/.kernelhub/snippets)'
};

export function sourceLabel(source: SnippetSource): string {
  return LABELS[source] ?? source;
}

export function sourceDescription(source: SnippetSource): string {
  return DESCRIPTIONS[source] ?? source;
}
