/** Pieces the palette and the panel share: a snippet's source badge, title, preview. */
import { h } from './dom';
import { highlightSegments } from './search';
import { sourceDescription, sourceLabel } from './sources';
import { IProblem, ISnippet } from './types';

export function sourceBadge(snippet: ISnippet): HTMLElement {
  return h('span', {
    className: 'jp-kh-Snippets-source',
    text: sourceLabel(snippet.source),
    title: sourceDescription(snippet.source),
    attrs: { 'data-source': snippet.source }
  });
}

/** The title, with the characters that matched the search in <mark>. */
export function titleNode(snippet: ISnippet, indices: readonly number[] = []): HTMLElement {
  const node = h('span', { className: 'jp-kh-Snippets-title' });
  for (const segment of highlightSegments(snippet.title, indices)) {
    node.append(segment.match ? h('mark', { text: segment.text }) : segment.text);
  }
  return node;
}

/** The whole snippet: what it is, where it comes from, and every cell it inserts. */
export function previewNode(snippet: ISnippet): HTMLElement {
  const meta = h(
    'div',
    { className: 'jp-kh-SnippetPreview-meta' },
    sourceBadge(snippet),
    h('span', { className: 'jp-kh-SnippetPreview-category', text: snippet.category }),
    ...snippet.tags.map(tag => h('span', { className: 'jp-kh-SnippetPreview-tag', text: tag }))
  );
  const cells = snippet.cells.map(cell =>
    cell.cell_type === 'code'
      ? h('pre', {
          className: 'jp-kh-SnippetPreview-code',
          text: cell.source,
          attrs: { 'data-cell-type': 'code' }
        })
      : h('div', {
          className: 'jp-kh-SnippetPreview-markdown',
          text: cell.source,
          attrs: { 'data-cell-type': 'markdown' }
        })
  );
  return h(
    'div',
    { className: 'jp-kh-SnippetPreview', attrs: { 'data-snippet-id': snippet.id } },
    h('div', { className: 'jp-kh-SnippetPreview-title', text: snippet.title }),
    meta,
    snippet.description &&
      h('div', { className: 'jp-kh-SnippetPreview-description', text: snippet.description }),
    snippet.requires.length > 0 &&
      h('div', {
        className: 'jp-kh-SnippetPreview-requires',
        text: `Needs: ${snippet.requires.join(', ')}`
      }),
    ...cells
  );
}

const PROBLEM_SOURCES: Record<string, string> = {
  builtin: 'built-in',
  site: 'site snippets',
  user: 'your snippets'
};

/**
 * "⚠ 2 snippet files skipped", folded; unfolded, each file (its name, the full path on
 * hover), whose folder it is in, and why. Null when all is well.
 */
export function problemsNode(problems: readonly IProblem[], open = false): HTMLElement | null {
  if (problems.length === 0) {
    return null;
  }
  const count = problems.length;
  const summary = `${count} snippet file${count === 1 ? '' : 's'} skipped`;
  return h(
    'details',
    {
      className: 'jp-kh-Snippets-problems',
      attrs: { role: 'status', ...(open ? { open: '' } : {}) }
    },
    h('summary', { text: `⚠ ${summary}` }),
    h(
      'ul',
      {},
      ...problems.map(problem =>
        h(
          'li',
          { attrs: { 'data-path': problem.path } },
          h('code', { text: baseName(problem.path), title: problem.path }),
          ` (${PROBLEM_SOURCES[problem.source] ?? problem.source}): ${problem.reason}`
        )
      )
    )
  );
}

function baseName(path: string): string {
  return path.replace(/\/+$/, '').split('/').pop() || path;
}
