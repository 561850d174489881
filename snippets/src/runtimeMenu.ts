/**
 * Colab's Runtime menu in Notebook 7 and JupyterLab: Change runtime type…, Restart
 * runtime, Manage sessions, Disconnect and delete runtime; and kernelhub's logo in the
 * top bar, back to the hub's home page.
 *
 * Everything goes through this runtime's server extension (kernelhub/runtime), which
 * asks the hub with the runtime's own token: the page holds no hub credentials. A
 * switch is answered before the runtime stops; the page then goes to the hub's switch
 * page, which shows the new runtime's progress and reopens the same notebook path.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { MenuSvg } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import {
  currentTypeName,
  IRuntimeInfo,
  IRuntimeRow,
  RuntimeClient,
  switchUrl
} from './runtimeApi';
import { RuntimeTypeChooser, SessionList } from './runtimeDialogs';

export const RuntimeCommandIDs = {
  changeType: 'kernelhub-runtime:change-type',
  restart: 'kernelhub-runtime:restart',
  manageSessions: 'kernelhub-runtime:manage-sessions',
  disconnect: 'kernelhub-runtime:disconnect-and-delete'
} as const;

// the resources plugin's command (resourcesPlugin.ts), in the menu when it is there
const SHOW_RESOURCES_COMMAND = 'kernelhub-runtime:show-resources';

const LOGO_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="28" height="28" aria-hidden="true">
  <rect x="2" y="2" width="60" height="60" rx="14" fill="#263238"/>
  <path d="M20 14v36M20 34l18-20M27 27l13 23" fill="none" stroke="#ffffff" stroke-width="7" stroke-linecap="round" stroke-linejoin="round"/>
  <circle cx="46" cy="20" r="6" fill="#f9ab00"/>
</svg>`;

function hubHome(): string {
  const prefix = PageConfig.getOption('hubPrefix');
  return prefix ? URLExt.join(prefix, 'home') : '/hub/home';
}

/** A link to the hub's home page with kernelhub's logo and name, for the top bar. */
function logoWidget(): Widget {
  const link = h('a', {
    className: 'kh-TopLogo',
    title: 'kernelhub: your runtimes',
    attrs: { href: hubHome() }
  });
  link.innerHTML = LOGO_SVG; // a constant, not user data
  link.appendChild(h('span', { className: 'kh-TopLogo-name' }, 'kernelhub'));
  const widget = new Widget({ node: link });
  widget.id = 'kernelhub-logo';
  return widget;
}

/** A dialog that cannot be dismissed: the page is about to go elsewhere. */
function showProgress(title: string, message: string): void {
  const body = h('p', { className: 'kh-RuntimeProgress', attrs: { role: 'status' } }, message);
  const dialog = new Dialog({ title, body: new Widget({ node: body }), buttons: [] });
  void dialog.launch();
}

const runtimeMenuPlugin: JupyterFrontEndPlugin<void> = {
  id: '@kernelhub/snippets:runtime-menu',
  description: "Colab's Runtime menu: change runtime type, restart, sessions, disconnect.",
  autoStart: true,
  optional: [IMainMenu, ICommandPalette, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    mainMenu: IMainMenu | null,
    palette: ICommandPalette | null,
    tracker: INotebookTracker | null
  ): void => {
    const settings = ServerConnection.makeSettings();
    const client = new RuntimeClient(settings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, settings)
    );
    const { commands } = app;

    const saveNotebooks = async (): Promise<void> => {
      const saves: Promise<void>[] = [];
      tracker?.forEach(panel => {
        if (panel.context.model.dirty && !panel.context.model.readOnly) {
          saves.push(panel.context.save());
        }
      });
      await Promise.all(saves);
    };

    const readInfo = async (): Promise<IRuntimeInfo | null> => {
      try {
        const info = await client.info();
        if (!info.hub) {
          await showErrorMessage('Runtime', 'This server does not run under a kernelhub hub.');
          return null;
        }
        return info;
      } catch (error) {
        await showErrorMessage('Runtime', error instanceof Error ? error.message : String(error));
        return null;
      }
    };

    const changeType = async (): Promise<void> => {
      let info = await readInfo();
      if (!info) {
        return;
      }
      const current = currentTypeName(info);
      let selected = current;
      let error = '';
      for (;;) {
        const chooser = new RuntimeTypeChooser(info.types, selected, current, error);
        const result = await showDialog({
          title: 'Change runtime type',
          body: chooser,
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save' })]
        });
        if (!result.button.accept || result.value === null || result.value === current) {
          return;
        }
        selected = result.value;
        try {
          await saveNotebooks();
          const page = await client.switchTo(selected);
          if (page === null) {
            return; // already of that type
          }
          const label = info.types.find(t => t.name === selected)?.displayName ?? selected;
          showProgress(
            'Changing runtime type',
            `Restarting this runtime as “${label}”. The notebook reopens when it is ready.`
          );
          window.location.assign(switchUrl(page, window.location.pathname, window.location.search));
          return;
        } catch (e) {
          // refused (quota, no free GPU, group...): this runtime keeps running
          error = e instanceof Error ? e.message : String(e);
          info = (await client.info().catch(() => null)) ?? info;
        }
      }
    };

    const stopRuntime = async (info: IRuntimeInfo, row: IRuntimeRow): Promise<boolean> => {
      try {
        if (row.name === info.server) {
          await saveNotebooks();
        }
        await client.stop(row.name);
      } catch (error) {
        await showErrorMessage('Stop runtime', error instanceof Error ? error.message : String(error));
        return false;
      }
      if (row.name === info.server) {
        showProgress('Runtime stopped', 'This runtime is stopping. Going to your runtimes…');
        window.location.assign(hubHome());
      }
      return true;
    };

    const manageSessions = async (): Promise<void> => {
      const info = await readInfo();
      if (!info) {
        return;
      }
      const list = new SessionList(info.runtimes, info.server, row => stopRuntime(info, row));
      const dialog = new Dialog({
        title: 'Active sessions',
        body: list,
        buttons: [Dialog.okButton({ label: 'Close' })]
      });
      await dialog.launch();
    };

    const disconnect = async (): Promise<void> => {
      const info = await readInfo();
      if (!info || !info.current) {
        return;
      }
      const answer = await showDialog({
        title: 'Disconnect and delete runtime',
        body:
          'Stop this runtime? Open notebooks are saved and files on your drive stay; ' +
          'variables in memory and running code are lost.',
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete runtime' })]
      });
      if (answer.button.accept) {
        await stopRuntime(info, info.current);
      }
    };

    commands.addCommand(RuntimeCommandIDs.changeType, {
      label: 'Change runtime type…',
      caption: 'Restart this runtime with other hardware (CPU, GPU); files on your drive stay',
      execute: changeType
    });
    commands.addCommand(RuntimeCommandIDs.restart, {
      label: 'Restart runtime',
      caption: "Restart the notebook's kernel: variables are cleared, files stay",
      isEnabled: () => tracker?.currentWidget != null,
      execute: () => commands.execute('notebook:restart-kernel')
    });
    commands.addCommand(RuntimeCommandIDs.manageSessions, {
      label: 'Manage sessions',
      caption: 'Your runtimes: type, age, time left; stop any of them',
      execute: manageSessions
    });
    commands.addCommand(RuntimeCommandIDs.disconnect, {
      label: 'Disconnect and delete runtime',
      caption: 'Stop this runtime; files on your drive stay',
      execute: disconnect
    });

    const menu = new MenuSvg({ commands });
    menu.id = 'kernelhub-runtime-menu';
    menu.title.label = 'Runtime';
    menu.addItem({ command: RuntimeCommandIDs.restart });
    menu.addItem({ type: 'separator' });
    menu.addItem({ command: RuntimeCommandIDs.changeType });
    menu.addItem({ command: RuntimeCommandIDs.manageSessions });
    menu.addItem({ command: RuntimeCommandIDs.disconnect });
    void app.restored.then(() => {
      if (commands.hasCommand(SHOW_RESOURCES_COMMAND)) {
        menu.addItem({ type: 'separator' });
        menu.addItem({ command: SHOW_RESOURCES_COMMAND });
      }
    });
    mainMenu?.addMenu(menu, true, { rank: 450 }); // after Run and Kernel
    for (const command of Object.values(RuntimeCommandIDs)) {
      palette?.addItem({ command, category: 'Runtime' });
    }
    app.shell.add(logoWidget(), 'top', { rank: 0 });
  }
};

export default runtimeMenuPlugin;
