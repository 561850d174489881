/**
 * Quota notices in the notebook: what kernelhub's quota daemon says about the user's
 * runtimes, shown as notifications where the user works. The runtime asks the hub
 * for them ({baseUrl}kernelhub/notices, the kernelhub-snippets server extension);
 * this plugin polls that every minute.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IQuotaNotice, noticesToShow, parseNotices, POLL_SECONDS } from './notices';

function notify(notice: IQuotaNotice, hubHome: string): void {
  const text = `${notice.title}: ${notice.message}`;
  const options = {
    autoClose: false as const,
    actions: [
      {
        label: 'Hub home',
        caption: 'Your runtimes and their notices',
        callback: () => window.open(hubHome, '_blank')
      }
    ]
  };
  if (notice.kind === 'warn') {
    Notification.warning(text, options);
  } else {
    Notification.error(text, options);
  }
}

const noticesPlugin: JupyterFrontEndPlugin<void> = {
  id: '@kernelhub/snippets:quota-notices',
  description: "Shows kernelhub's quota warnings and stops as notifications in the notebook.",
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
    const settings = ServerConnection.makeSettings();
    const url = URLExt.join(settings.baseUrl, 'kernelhub', 'notices');
    const hubPrefix = PageConfig.getOption('hubPrefix');
    const hubHome = hubPrefix ? URLExt.join(hubPrefix, 'home') : '/hub/home';
    const shown = new Set<string>();
    const openedAt = new Date(Date.now() - POLL_SECONDS * 1000);

    const poll = async (): Promise<void> => {
      try {
        const response = await ServerConnection.makeRequest(url, {}, settings);
        if (!response.ok) {
          return; // an older runtime image, or the server going away: stay quiet
        }
        for (const notice of noticesToShow(parseNotices(await response.json()), shown, openedAt)) {
          shown.add(notice.id);
          notify(notice, hubHome);
        }
      } catch {
        // the server is restarting or gone; JupyterLab says so itself
      }
    };
    void app.restored.then(poll);
    window.setInterval(() => void poll(), POLL_SECONDS * 1000);
  }
};

export default noticesPlugin;
