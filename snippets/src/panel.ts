/**
 * The side panel: every snippet by category, a filter, where each comes from, and the
 * snippet files the server skipped. Clicking a snippet inserts it into the current
 * notebook; the user's own snippets can be deleted from here.
 */
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { groupByCategory } from './grouping';
import { snippetsIcon } from './icon';
import { search } from './search';
import { SnippetStore } from './store';
import { ISnippet } from './types';
import { previewNode, problemsNode, sourceBadge, titleNode } from './views';

export interface IPanelActions {
  insert(snippet: ISnippet): void;
  saveSelection(): void;
  remove(snippet: ISnippet): void;
}

export class SnippetPanel extends Widget {
  constructor(
    private readonly store: SnippetStore,
    private readonly actions: IPanelActions
  ) {
    super();
    this.id = 'kernelhub-snippets-panel';
    this.addClass('jp-kh-SnippetPanel');
    this.title.icon = snippetsIcon;
    this.title.caption = 'Code snippets';
    this.title.label = '';
    this.filterInput = h('input', {
      className: 'jp-kh-SnippetPanel-filter jp-mod-styled',
      attrs: { type: 'search', placeholder: 'Filter snippets', 'aria-label': 'Filter snippets' }
    });
    const refresh = h('button', {
      className: 'jp-Button jp-mod-minimal jp-kh-SnippetPanel-refresh',
      text: '⟳',
      title: 'Load the snippets again',
      attrs: { type: 'button', 'aria-label': 'Refresh snippets' }
    });
    const save = h('button', {
      className: 'jp-Button jp-mod-styled jp-mod-reject jp-kh-SnippetPanel-save',
      text: 'Save selected cells…',
      title: 'Save the selected cells of the notebook as one of your snippets',
      attrs: { type: 'button' }
    });
    this.status = h('div', { className: 'jp-kh-SnippetPanel-status' });
    this.body = h('div', { className: 'jp-kh-SnippetPanel-body' });
    this.node.append(
      h(
        'div',
        { className: 'jp-kh-SnippetPanel-header' },
        h('h2', { text: 'Snippets' }),
        refresh
      ),
      h('div', { className: 'jp-kh-SnippetPanel-tools' }, this.filterInput, save),
      this.status,
      this.body
    );
    this.filterInput.addEventListener('input', () => this.render());
    refresh.addEventListener('click', () => void this.store.refresh().catch(() => undefined));
    save.addEventListener('click', () => this.actions.saveSelection());
    this.body.addEventListener('click', event => this.onClick(event));
    // 'toggle' does not bubble: listen while it goes down, to keep what the user
    // folded and unfolded across refreshes
    this.node.addEventListener('toggle', event => this.onToggle(event), true);
    store.changed.connect(this.render, this);
    this.render();
  }

  dispose(): void {
    this.store.changed.disconnect(this.render, this);
    super.dispose();
  }

  /** Load the snippets again each time the panel is shown: folders may have changed. */
  protected onAfterShow(): void {
    void this.store.refresh().catch(() => undefined);
  }

  private render(): void {
    const { snippets, problems } = this.store.listing;
    const error = this.store.error;
    this.status.replaceChildren(
      ...[
        error && h('div', { className: 'jp-kh-SnippetPanel-error', text: error }),
        !this.store.loaded && !error && h('div', { text: 'Loading snippets…' }),
        problemsNode(problems, this.problemsOpen)
      ].filter((node): node is HTMLElement => !!node)
    );
    const query = this.filterInput.value;
    if (query.trim()) {
      const ranked = search(snippets, query);
      this.body.replaceChildren(
        ranked.length
          ? this.list(ranked.map(r => ({ snippet: r.snippet, indices: r.titleIndices })))
          : h('p', { className: 'jp-kh-SnippetPanel-empty', text: 'No snippet matches.' })
      );
      return;
    }
    this.body.replaceChildren(
      ...groupByCategory(snippets).map(category =>
        h(
          'details',
          {
            className: 'jp-kh-SnippetPanel-category',
            attrs: {
              'data-category': category.name,
              ...(this.folded.has(category.name) ? {} : { open: '' })
            }
          },
          h('summary', {}, `${category.name} `, h('span', { text: `(${category.snippets.length})` })),
          this.list(category.snippets.map(snippet => ({ snippet, indices: [] })))
        )
      )
    );
  }

  private list(items: { snippet: ISnippet; indices: number[] }[]): HTMLElement {
    return h(
      'ul',
      { className: 'jp-kh-SnippetPanel-list' },
      ...items.map(({ snippet, indices }) => {
        const item = h(
          'li',
          {
            className: 'jp-kh-SnippetPanel-item',
            attrs: { 'data-snippet-id': snippet.id, 'data-source': snippet.source }
          },
          h(
            'button',
            {
              className: 'jp-kh-SnippetPanel-insert',
              title: `Insert below the active cell${snippet.description ? `: ${snippet.description}` : ''}`,
              attrs: { type: 'button', 'data-action': 'insert' }
            },
            titleNode(snippet, indices)
          ),
          sourceBadge(snippet),
          h('button', {
            className: 'jp-Button jp-mod-minimal jp-kh-SnippetPanel-toggle',
            text: '▸',
            title: 'Show the code',
            attrs: { type: 'button', 'data-action': 'preview', 'aria-expanded': 'false' }
          })
        );
        if (snippet.source === 'user') {
          item.append(
            h('button', {
              className: 'jp-Button jp-mod-minimal jp-kh-SnippetPanel-delete',
              text: '✕',
              title: 'Delete this snippet of yours',
              attrs: { type: 'button', 'data-action': 'delete' }
            })
          );
        }
        return item;
      })
    );
  }

  private onToggle(event: Event): void {
    const details = event.target;
    if (!(details instanceof HTMLDetailsElement)) {
      return;
    }
    if (details.classList.contains('jp-kh-Snippets-problems')) {
      this.problemsOpen = details.open;
    }
    const category = details.dataset.category;
    if (category !== undefined) {
      if (details.open) {
        this.folded.delete(category);
      } else {
        this.folded.add(category);
      }
    }
  }

  private onClick(event: MouseEvent): void {
    const button = (event.target as HTMLElement).closest<HTMLElement>('[data-action]');
    const item = button?.closest<HTMLElement>('[data-snippet-id]');
    const snippet = this.store.listing.snippets.find(s => s.id === item?.dataset.snippetId);
    if (!button || !item || !snippet) {
      return;
    }
    switch (button.dataset.action) {
      case 'insert':
        this.actions.insert(snippet);
        break;
      case 'delete':
        this.actions.remove(snippet);
        break;
      case 'preview': {
        const open = item.querySelector('.jp-kh-SnippetPreview');
        if (open) {
          open.remove();
        } else {
          item.append(previewNode(snippet));
        }
        button.setAttribute('aria-expanded', String(!open));
        button.textContent = open ? '▸' : '▾';
        break;
      }
    }
  }

  private readonly folded = new Set<string>(); // categories the user folded
  private problemsOpen = false;
  private readonly filterInput: HTMLInputElement;
  private readonly status: HTMLDivElement;
  private readonly body: HTMLDivElement;
}
