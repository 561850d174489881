/** Inserting a snippet's cells into a notebook, below its active cell. */
import { Notebook } from '@jupyterlab/notebook';

import { toNotebookCells } from './cells';
import { ISnippet } from './types';

/**
 * Insert the snippet's cells below the active cell (at the top of an empty notebook),
 * in one undoable step. The inserted cells end up selected, the last one active, and
 * the notebook in command mode: Shift+Enter then runs the whole snippet.
 * Returns the index of the first inserted cell.
 */
export function insertSnippet(notebook: Notebook, snippet: ISnippet): number {
  const model = notebook.model;
  if (!model) {
    throw new Error('the notebook is still loading');
  }
  const cells = toNotebookCells(snippet);
  const first = notebook.activeCell ? notebook.activeCellIndex + 1 : 0;
  model.sharedModel.insertCells(first, cells);
  const last = first + cells.length - 1;
  notebook.deselectAll();
  notebook.activeCellIndex = first;
  if (last > first) {
    notebook.extendContiguousSelectionTo(last);
  }
  notebook.mode = 'command';
  void notebook.scrollToItem(first, 'smart');
  return first;
}

/** The code and markdown cells the user selected (the active cell when none are). */
export function selectedCells(notebook: Notebook): { cell_type: string; source: string }[] {
  return notebook.widgets
    .filter(cell => notebook.isSelectedOrActive(cell))
    .map(cell => ({ cell_type: cell.model.type, source: cell.model.sharedModel.getSource() }));
}
