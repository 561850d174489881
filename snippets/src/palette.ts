/**
 * The snippet palette (Ctrl+Alt+P): a search field, the matching snippets best first,
 * and a preview of the selected one. It is the body of a JupyterLab Dialog: Enter
 * inserts the selected snippet, Escape closes, arrows move the selection.
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { IRanked, search } from './search';
import { IListing, ISnippet } from './types';
import { previewNode, problemsNode, sourceBadge, titleNode } from './views';

const PAGE = 8;

export class SnippetPalette extends Widget implements Dialog.IBodyWidget<ISnippet | null> {
  /**
   * @param listing - the snippets to search
   * @param accept - called when a result is double-clicked (closes the dialog)
   */
  constructor(
    private readonly listing: IListing,
    private readonly accept: () => void
  ) {
    super();
    this.addClass('jp-kh-SnippetPalette');
    this.searchInput = h('input', {
      className: 'jp-kh-SnippetPalette-search',
      attrs: {
        type: 'text',
        placeholder: 'Search snippets by title, tag or code',
        'aria-label': 'Search snippets',
        autocomplete: 'off',
        spellcheck: 'false'
      }
    });
    this.list = h('ul', {
      className: 'jp-kh-SnippetPalette-results',
      attrs: { role: 'listbox', 'aria-label': 'Snippets' }
    });
    this.preview = h('div', { className: 'jp-kh-SnippetPalette-preview' });
    this.node.append(
      this.searchInput,
      h('div', { className: 'jp-kh-SnippetPalette-main' }, this.list, this.preview)
    );
    const problems = problemsNode(listing.problems);
    if (problems) {
      this.node.append(problems);
    }
    this.searchInput.addEventListener('input', () => this.filter());
    this.searchInput.addEventListener('keydown', event => this.onKey(event));
    this.list.addEventListener('click', event => this.onClick(event, false));
    this.list.addEventListener('dblclick', event => this.onClick(event, true));
    this.filter();
  }

  /** The selected snippet: what the dialog resolves to. */
  getValue(): ISnippet | null {
    return this.results[this.selected]?.snippet ?? null;
  }

  /** The current results (for tests and the dialog's caller). */
  get matches(): readonly IRanked[] {
    return this.results;
  }

  private filter(): void {
    this.results = search(this.listing.snippets, this.searchInput.value);
    this.selected = 0;
    this.list.replaceChildren(
      ...this.results.map((result, index) =>
        h(
          'li',
          {
            className: 'jp-kh-SnippetPalette-item',
            attrs: {
              role: 'option',
              'data-index': String(index),
              'data-snippet-id': result.snippet.id
            }
          },
          titleNode(result.snippet, result.titleIndices),
          h('span', { className: 'jp-kh-SnippetPalette-category', text: result.snippet.category }),
          sourceBadge(result.snippet)
        )
      )
    );
    if (this.results.length === 0) {
      const none = this.listing.snippets.length
        ? `No snippet matches “${this.searchInput.value.trim()}”.`
        : 'There are no snippets yet.';
      this.list.append(h('li', { className: 'jp-kh-SnippetPalette-empty', text: none }));
    }
    this.select(0);
  }

  private select(index: number): void {
    const items = this.list.querySelectorAll<HTMLElement>('.jp-kh-SnippetPalette-item');
    if (items.length === 0) {
      this.preview.replaceChildren();
      return;
    }
    this.selected = Math.max(0, Math.min(index, items.length - 1));
    items.forEach((item, i) => {
      item.classList.toggle('jp-mod-selected', i === this.selected);
      item.setAttribute('aria-selected', String(i === this.selected));
    });
    items[this.selected].scrollIntoView?.({ block: 'nearest' });
    this.preview.replaceChildren(previewNode(this.results[this.selected].snippet));
  }

  private onKey(event: KeyboardEvent): void {
    const moves: Record<string, number> = {
      ArrowDown: 1,
      ArrowUp: -1,
      PageDown: PAGE,
      PageUp: -PAGE
    };
    const move = moves[event.key];
    if (move !== undefined) {
      event.preventDefault();
      this.select(this.selected + move);
    }
  }

  private onClick(event: MouseEvent, accept: boolean): void {
    const item = (event.target as HTMLElement).closest<HTMLElement>('[data-index]');
    if (!item) {
      return;
    }
    this.select(Number(item.dataset.index));
    if (accept) {
      this.accept();
    }
  }

  private readonly searchInput: HTMLInputElement;
  private readonly list: HTMLUListElement;
  private readonly preview: HTMLDivElement;
  private results: IRanked[] = [];
  private selected = 0;
}

/**
 * Show the palette over ``listing``; resolves to the snippet chosen, or null when the
 * user closed it.
 */
export async function choose(listing: IListing): Promise<ISnippet | null> {
  const insert = Dialog.okButton({ label: 'Insert', caption: 'Insert below the active cell' });
  let dialog: Dialog<ISnippet | null> | null = null;
  const body = new SnippetPalette(listing, () => dialog?.resolve(1));
  dialog = new Dialog<ISnippet | null>({
    title: 'Insert a snippet',
    body,
    buttons: [Dialog.cancelButton(), insert],
    focusNodeSelector: '.jp-kh-SnippetPalette-search'
  });
  dialog.addClass('jp-kh-SnippetPaletteDialog');
  const result = await dialog.launch();
  return result.button.accept ? result.value : null;
}
