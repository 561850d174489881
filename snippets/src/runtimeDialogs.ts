/**
 * The Runtime menu's dialog bodies: the runtime types to choose from (the hub's own
 * list: descriptions, limits, and why one is unavailable), and the user's runtimes.
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { IRuntimeRow, IRuntimeType, typeLimits } from './runtimeApi';

/** Radio buttons, one per runtime type; unavailable ones disabled with their reason. */
export class RuntimeTypeChooser extends Widget implements Dialog.IBodyWidget<string> {
  private selected: string;

  constructor(types: IRuntimeType[], selected: string, current: string, error: string) {
    super();
    this.selected = selected;
    this.addClass('kh-RuntimeChooser');
    if (error) {
      this.node.appendChild(h('p', { className: 'kh-RuntimeChooser-error', attrs: { role: 'alert' } }, error));
    }
    this.node.appendChild(h('p', { className: 'kh-RuntimeChooser-label' }, 'Hardware accelerator'));
    const group = h('div', { attrs: { role: 'radiogroup', 'aria-label': 'Runtime type' } });
    for (const type of types) {
      const id = `kh-runtime-type-${type.name}`;
      const input = h('input', {
        attrs: { type: 'radio', name: 'kh-runtime-type', id, value: type.name }
      });
      input.checked = type.name === selected;
      input.disabled = !type.available;
      input.addEventListener('change', () => {
        if (input.checked) {
          this.selected = type.name;
        }
      });
      const title = type.displayName + (type.name === current ? ' (current)' : '');
      const details = [type.description, typeLimits(type)].filter(Boolean).join(' — ');
      const option = h(
        'label',
        {
          className: 'kh-RuntimeChooser-option',
          attrs: { for: id, 'data-runtime-type': type.name }
        },
        input,
        h('span', { className: 'kh-RuntimeChooser-title' }, title),
        h('span', { className: 'kh-RuntimeChooser-details' }, details)
      );
      if (!type.available) {
        option.classList.add('kh-mod-unavailable');
        option.appendChild(
          h('span', { className: 'kh-RuntimeChooser-reason' }, `Unavailable: ${type.reason}`)
        );
      }
      group.appendChild(option);
    }
    this.node.appendChild(group);
    this.node.appendChild(
      h(
        'p',
        { className: 'kh-RuntimeChooser-note' },
        'Saving restarts this runtime as the chosen type: files on your drive stay, ' +
          'variables in memory are lost. Open notebooks are saved first.'
      )
    );
  }

  getValue(): string {
    return this.selected;
  }
}

/** A table of the user's runtimes, each with a Stop button while it runs. */
export class SessionList extends Widget {
  constructor(
    rows: IRuntimeRow[],
    current: string,
    stop: (row: IRuntimeRow) => Promise<boolean>
  ) {
    super();
    this.addClass('kh-SessionList');
    const table = h(
      'table',
      {},
      h(
        'thead',
        {},
        h('tr', {}, ...['Runtime', 'Type', 'Status', 'Age', 'Time left', ''].map(t => h('th', {}, t)))
      )
    );
    const body = h('tbody', {});
    for (const row of rows) {
      const running = row.status !== 'stopped';
      const name = row.label + (row.name === current ? ' (this one)' : '');
      const button = h('button', { className: 'jp-mod-styled jp-mod-warn', attrs: { type: 'button' } }, 'Stop');
      const status = h('td', { className: 'kh-SessionList-status' }, row.status);
      button.addEventListener('click', () => {
        button.disabled = true;
        status.textContent = 'stopping';
        void stop(row).then(stopped => {
          status.textContent = stopped ? 'stopped' : row.status;
          button.disabled = stopped;
          button.hidden = stopped;
        });
      });
      body.appendChild(
        h(
          'tr',
          { attrs: { 'data-server': row.name } },
          h('td', {}, name),
          h('td', {}, row.runtimeTypeLabel || '—'),
          status,
          h('td', {}, row.age || '—'),
          h('td', {}, row.timeLeft || '—'),
          h('td', {}, running ? button : '')
        )
      );
    }
    table.appendChild(body);
    this.node.appendChild(table);
    if (rows.length === 0) {
      this.node.appendChild(h('p', {}, 'You have no runtimes.'));
    }
  }
}
