/**
 * Snippets to notebook cells and back: what "insert" puts into the notebook, and what
 * "Save selected cells as a snippet" sends to the server.
 */
import { ISnippet, ISnippetCell } from './types';

/**
 * A new notebook cell, as the notebook's shared model inserts it (a type, not an
 * interface, so that it fits nbformat's JSON index signature).
 */
export type INotebookCell = {
  cell_type: 'code' | 'markdown';
  source: string;
  metadata: { trusted?: boolean };
};

/**
 * The snippet's cells, code and markdown, in order. Code cells are marked trusted as
 * JupyterLab's own "insert cell" does: the user chose to add them.
 */
export function toNotebookCells(snippet: ISnippet): INotebookCell[] {
  return snippet.cells.map(cell => ({
    cell_type: cell.cell_type,
    source: cell.source,
    metadata: cell.cell_type === 'code' ? { trusted: true } : {}
  }));
}

/** A cell of the notebook as read from its model (raw cells included). */
export interface ISourceCell {
  cell_type: string;
  source: string;
}

/**
 * The selected cells as snippet cells: code and markdown cells that hold something,
 * trailing blank lines dropped. Raw cells are not part of the snippet format.
 */
export function fromNotebookCells(cells: readonly ISourceCell[]): ISnippetCell[] {
  const result: ISnippetCell[] = [];
  for (const cell of cells) {
    if (cell.cell_type !== 'code' && cell.cell_type !== 'markdown') {
      continue;
    }
    const source = cell.source.replace(/\s+$/, '');
    if (source.trim()) {
      result.push({ cell_type: cell.cell_type, source });
    }
  }
  return result;
}

const TITLE_LIMIT = 120; // the server's limit on a title

/**
 * A title to propose when saving cells: the first markdown heading, else the first
 * comment line of the code, else nothing.
 */
export function suggestTitle(cells: readonly ISnippetCell[]): string {
  for (const cell of cells) {
    const pattern = cell.cell_type === 'markdown' ? /^\s*#{1,6}\s+(.+?)\s*#*\s*$/ : null;
    const heading = pattern ? firstLineMatching(cell.source, pattern) : null;
    if (heading) {
      return heading.slice(0, TITLE_LIMIT);
    }
  }
  for (const cell of cells) {
    if (cell.cell_type === 'code') {
      const comment = firstLineMatching(cell.source, /^\s*#(?![!%])\s*(\S.*?)\s*$/);
      if (comment) {
        return comment.slice(0, TITLE_LIMIT);
      }
    }
  }
  return '';
}

function firstLineMatching(text: string, pattern: RegExp): string | null {
  for (const line of text.split('\n')) {
    const match = pattern.exec(line);
    if (match) {
      return match[1];
    }
  }
  return null;
}

/** "a, b,, c , a" -> ["a", "b", "c"]: the tags field of the save form. */
export function parseTags(text: string): string[] {
  const seen = new Set<string>();
  for (const part of text.split(',')) {
    const tag = part.trim();
    if (tag) {
      seen.add(tag);
    }
  }
  return [...seen];
}

/** The code of a snippet as the preview shows it: its cells, a separator between them. */
export function previewText(snippet: ISnippet): string {
  return snippet.cells
    .map(cell => (cell.cell_type === 'markdown' ? markdownPreview(cell.source) : cell.source))
    .join('\n\n');
}

function markdownPreview(source: string): string {
  return source
    .split('\n')
    .map(line => `# ${line}`.trimEnd())
    .join('\n');
}
