/**
 * "Save selected cells as a snippet": a small form (title, description, category, tags)
 * in a Dialog. The cells go to the server, which saves them on the user's drive.
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { parseTags, suggestTitle } from './cells';
import { h } from './dom';
import { INewSnippet, ISnippetCell } from './types';

export interface ISaveForm {
  title: string;
  description: string;
  category: string;
  tags: string;
}

export class SaveSnippetForm extends Widget implements Dialog.IBodyWidget<ISaveForm> {
  constructor(values: ISaveForm, categories: readonly string[], cellCount: number, error = '') {
    super();
    this.addClass('jp-kh-SaveSnippet');
    const listId = `jp-kh-SaveSnippet-categories-${++SaveSnippetForm.count}`;
    this.inputs = {
      title: field('title', values.title, { required: 'true', maxlength: '120' }),
      description: field('description', values.description),
      category: field('category', values.category, { list: listId }),
      tags: field('tags', values.tags, { placeholder: 'comma-separated, e.g. pandas, csv' })
    };
    const label = (text: string, input: HTMLInputElement): HTMLElement =>
      h('label', { className: 'jp-kh-SaveSnippet-row' }, h('span', { text }), input);
    this.node.append(
      h('p', {
        className: 'jp-kh-SaveSnippet-summary',
        text: `${cellCount} cell${cellCount === 1 ? '' : 's'} will be saved to your snippets (on your drive, in ~/.kernelhub/snippets).`
      }),
      error && h('p', { className: 'jp-kh-SaveSnippet-error', text: error }),
      label('Title', this.inputs.title),
      label('Description', this.inputs.description),
      label('Category', this.inputs.category),
      label('Tags', this.inputs.tags),
      h('datalist', { attrs: { id: listId } }, ...categories.map(c => h('option', { attrs: { value: c } })))
    );
  }

  getValue(): ISaveForm {
    return {
      title: this.inputs.title.value,
      description: this.inputs.description.value,
      category: this.inputs.category.value,
      tags: this.inputs.tags.value
    };
  }

  private static count = 0;
  private readonly inputs: Record<keyof ISaveForm, HTMLInputElement>;
}

function field(name: string, value: string, attrs: Record<string, string> = {}): HTMLInputElement {
  const input = h('input', { attrs: { type: 'text', name, ...attrs } });
  input.value = value;
  return input;
}

/** The request body for the form's values and the cells. */
export function newSnippet(form: ISaveForm, cells: ISnippetCell[]): INewSnippet {
  const snippet: INewSnippet = { title: form.title.trim(), cells };
  const description = form.description.trim();
  const category = form.category.trim();
  const tags = parseTags(form.tags);
  if (description) {
    snippet.description = description;
  }
  if (category) {
    snippet.category = category;
  }
  if (tags.length) {
    snippet.tags = tags;
  }
  return snippet;
}

/**
 * Ask for the title and the rest; null when the user cancels. A form without a title
 * comes back with a note instead of going to the server.
 */
export async function askSnippetDetails(
  cells: ISnippetCell[],
  categories: readonly string[]
): Promise<ISaveForm | null> {
  let values: ISaveForm = {
    title: suggestTitle(cells),
    description: '',
    category: 'My snippets',
    tags: ''
  };
  let error = '';
  for (;;) {
    const result = await new Dialog<ISaveForm>({
      title: 'Save selected cells as a snippet',
      body: new SaveSnippetForm(values, categories, cells.length, error),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save' })],
      focusNodeSelector: 'input[name="title"]'
    }).launch();
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    if (values.title.trim()) {
      return values;
    }
    error = 'A snippet needs a title.';
  }
}
