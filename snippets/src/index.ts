/**
 * kernelhub snippets for Notebook 7 and JupyterLab 4: Ctrl+Alt+P (Cmd+Alt+P on macOS)
 * opens a palette to search and insert snippets, a side panel lists them by category,
 * and "Save selected cells as a snippet" adds the user's own. Also in the command
 * palette, the Edit menu and the cells' context menu. The snippets come from the
 * kernelhub-snippets server extension (GET/POST/DELETE {baseUrl}kernelhub-snippets/).
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, Notification, showDialog } from '@jupyterlab/apputils';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';

import { SnippetsClient } from './api';
import { fromNotebookCells } from './cells';
import { categoryNames } from './grouping';
import { snippetsIcon } from './icon';
import { insertSnippet, selectedCells } from './insert';
import { choose } from './palette';
import { SnippetPanel } from './panel';
import { askSnippetDetails, newSnippet } from './save';
import { SnippetStore } from './store';
import { ISnippet } from './types';
import noticesPlugin from './noticesPlugin';
import resourcesPlugin from './resourcesPlugin';
import runtimeMenuPlugin from './runtimeMenu';

export const CommandIDs = {
  open: 'kernelhub-snippets:open',
  save: 'kernelhub-snippets:save-selection',
  showPanel: 'kernelhub-snippets:show-panel'
} as const;

const CATEGORY = 'Snippets';

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@kernelhub/snippets:plugin',
  description: 'Code snippets: a Ctrl+Alt+P palette, a side panel, saving cells as snippets.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IMainMenu],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    mainMenu: IMainMenu | null
  ): void => {
    const settings = ServerConnection.makeSettings();
    const client = new SnippetsClient(settings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, settings)
    );
    const store = new SnippetStore(client);
    const { commands, shell } = app;

    const hasNotebook = (): boolean => tracker.currentWidget !== null;

    const insert = (snippet: ISnippet): void => {
      const panel = tracker.currentWidget;
      if (!panel) {
        Notification.warning('Open a notebook to insert a snippet.', { autoClose: 5000 });
        return;
      }
      try {
        insertSnippet(panel.content, snippet);
      } catch (error) {
        Notification.error(`Could not insert “${snippet.title}”: ${String(error)}`);
        return;
      }
      shell.activateById(panel.id);
      panel.content.activate();
    };

    const fail = (error: unknown): void => {
      Notification.error(error instanceof Error ? error.message : String(error), {
        autoClose: 8000
      });
    };

    commands.addCommand(CommandIDs.open, {
      label: 'Insert Snippet…',
      caption: 'Search the code snippets and insert one below the active cell',
      icon: args => (args.isPalette ? undefined : snippetsIcon),
      execute: async () => {
        let listing;
        try {
          listing = await store.refresh();
        } catch (error) {
          fail(error);
          return;
        }
        const snippet = await choose(listing);
        if (snippet) {
          insert(snippet);
        }
      }
    });

    commands.addCommand(CommandIDs.save, {
      label: 'Save Selected Cells as a Snippet…',
      caption: 'Save the selected cells as one of your snippets',
      isEnabled: hasNotebook,
      execute: async () => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        const cells = fromNotebookCells(selectedCells(panel.content));
        if (cells.length === 0) {
          await showDialog({
            title: 'Nothing to save',
            body: 'Select the code and markdown cells to save first (empty cells are left out).',
            buttons: [Dialog.okButton()]
          });
          return;
        }
        if (!store.loaded) {
          await store.refresh().catch(() => undefined);
        }
        const form = await askSnippetDetails(cells, categoryNames(store.listing.snippets));
        if (!form) {
          return;
        }
        try {
          const saved = await store.save(newSnippet(form, cells));
          Notification.success(`Saved “${saved.title}” to your snippets.`, { autoClose: 4000 });
        } catch (error) {
          fail(error);
        }
      }
    });

    const remove = async (snippet: ISnippet): Promise<void> => {
      const answer = await showDialog({
        title: 'Delete snippet',
        body: `Delete your snippet “${snippet.title}”? This removes its file from your drive.`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
      });
      if (answer.button.accept) {
        await store.remove(snippet.id).catch(fail);
      }
    };

    const panel = new SnippetPanel(store, {
      insert,
      saveSelection: () => void commands.execute(CommandIDs.save),
      remove: snippet => void remove(snippet)
    });
    shell.add(panel, 'right', { rank: 700 });

    commands.addCommand(CommandIDs.showPanel, {
      label: 'Show Snippets Panel',
      caption: 'The code snippets by category',
      execute: () => shell.activateById(panel.id)
    });

    commands.addKeyBinding({
      command: CommandIDs.open,
      keys: ['Accel Alt P'],
      selector: 'body'
    });

    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: CATEGORY });
    }
    mainMenu?.editMenu.addGroup([{ command: CommandIDs.open }, { command: CommandIDs.save }], 40);
    mainMenu?.viewMenu.addGroup([{ command: CommandIDs.showPanel }], 40);
    app.contextMenu.addItem({
      command: CommandIDs.save,
      selector: '.jp-Notebook .jp-Cell',
      rank: 40
    });
    app.contextMenu.addItem({
      command: CommandIDs.open,
      selector: '.jp-Notebook .jp-Cell',
      rank: 41
    });
  }
};

export default [plugin, noticesPlugin, resourcesPlugin, runtimeMenuPlugin];
