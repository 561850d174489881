/**
 * The Resources panel and its compact indicator: this runtime's RAM and CPU against
 * its limits (its control group's, from {baseUrl}kernelhub/resources), the drive, the
 * GPUs (NVML), and, inside a hub, the session's time left, an idle countdown when the
 * hub warns, and the user's GPU hours this week ({baseUrl}kernelhub/runtime).
 *
 * The panel polls every 5 s while it is visible; the indicator (Notebook 7's top bar,
 * and JupyterLab's status bar where there is one) keeps itself fresh every 30 s.
 * Figures carry `data-kernelhub-figure` names and raw numbers in `data-value`, so
 * that a browser test compares numbers, not formatted text.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import {
  cpuText,
  driveText,
  formatBytes,
  formatCores,
  formatHours,
  fraction,
  gpuText,
  idleText,
  indicatorText,
  IResources,
  IRuntimeInfo,
  memoryText,
  msUntil,
  parseResources,
  parseRuntimeInfo,
  quotaText,
  RESOURCES_POLL_SECONDS,
  RUNTIME_POLL_SECONDS,
  sessionText
} from './resources';

/** Opens (or brings forward) the Resources panel; the Runtime menu lists it too. */
export const SHOW_RESOURCES_COMMAND = 'kernelhub-runtime:show-resources';
export const RESOURCES_PANEL_ID = 'kernelhub-resources-panel';
export const RESOURCES_INDICATOR_ID = 'kernelhub-resources-indicator';
const INDICATOR_POLL_SECONDS = 30;

/** A gauge: the panel's tab. */
const SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M12 4a10 10 0 0 0-8.7 15h17.4A10 10 0 0 0 12 4zm0 2a8 8 0 0 1 7.5 11h-15A8 8 0 0 1 12 6zm4.2 2.4-5.3 5.1a1.6 1.6 0 1 0 2.2 2.2z"/>
</svg>`;
export const resourcesIcon = new LabIcon({ name: 'kernelhub-resources:icon', svgstr: SVG });

type Fetcher = (path: string) => Promise<unknown | null>;

/** GET {baseUrl}kernelhub/<path> as JSON; null for any failure (a poller stays quiet). */
function makeFetcher(): Fetcher {
  const settings = ServerConnection.makeSettings();
  return async (path: string) => {
    try {
      const url = URLExt.join(settings.baseUrl, 'kernelhub', path);
      const response = await ServerConnection.makeRequest(url, { cache: 'no-store' }, settings);
      return response.ok ? await response.json() : null;
    } catch {
      return null; // the server is restarting or gone; JupyterLab says so itself
    }
  };
}

function figure(name: string, className = 'jp-kh-Resources-value'): HTMLElement {
  return h('span', { className, attrs: { 'data-kernelhub-figure': name } });
}

function setFigure(node: HTMLElement, text: string, value: number | null): void {
  node.textContent = text;
  if (value === null) {
    node.removeAttribute('data-value');
  } else {
    node.setAttribute('data-value', String(value));
  }
}

/** A bar 0..1 (role=progressbar); empty without a limit. */
function bar(name: string): HTMLElement {
  const fill = h('div', { className: 'jp-kh-Resources-barFill' });
  return h(
    'div',
    {
      className: 'jp-kh-Resources-bar',
      attrs: {
        role: 'progressbar',
        'aria-label': name,
        'aria-valuemin': '0',
        'aria-valuemax': '100'
      }
    },
    fill
  );
}

function setBar(node: HTMLElement, part: number | null): void {
  const percent = part === null ? 0 : Math.round(part * 100);
  (node.firstChild as HTMLElement).style.width = `${percent}%`;
  node.setAttribute('aria-valuenow', String(percent));
  node.dataset.level = part === null ? 'none' : part >= 0.9 ? 'high' : part >= 0.7 ? 'mid' : 'low';
}

/** Whole seconds left (data-value of the countdowns); null without a time. */
function secondsLeft(ms: number | null): number | null {
  return ms === null ? null : Math.max(0, Math.floor(ms / 1000));
}

function row(label: string, ...children: HTMLElement[]): HTMLElement {
  return h(
    'div',
    { className: 'jp-kh-Resources-row' },
    h('span', { className: 'jp-kh-Resources-label', text: label }),
    ...children
  );
}

export class ResourcesPanel extends Widget {
  constructor(private readonly fetchJson: Fetcher) {
    super();
    this.id = RESOURCES_PANEL_ID;
    this.addClass('jp-kh-Resources');
    this.title.icon = resourcesIcon;
    this.title.label = 'Resources';
    this.title.caption = "This runtime's RAM, CPU, disk and GPUs";
    const f = this.figures;
    const memory = h('span', {}, f.memoryUsed, ' / ', f.memoryLimit);
    const cpu = h('span', {}, f.cpuUsed, ' / ', f.cpuLimit);
    this.session.hidden = true;
    this.session.append(
      h('h3', { text: 'Session' }),
      this.sessionType,
      f.sessionLeft,
      f.idleLeft,
      this.quotaText,
      this.quotaBar
    );
    this.node.append(
      h('h2', { text: 'Resources' }),
      h(
        'section',
        { className: 'jp-kh-Resources-section', attrs: { id: 'kernelhub-resources-usage' } },
        row('RAM', memory),
        this.memoryBar,
        row('CPU', cpu),
        this.cpuBar,
        row('Disk', f.driveUsed),
        this.driveBar,
        this.gpuList,
        this.problem
      ),
      this.session
    );
  }

  readonly figures = {
    memoryUsed: figure('memory-used'),
    memoryLimit: figure('memory-limit'),
    cpuUsed: figure('cpu-used'),
    cpuLimit: figure('cpu-limit'),
    driveUsed: figure('drive-used'),
    sessionLeft: figure('session-left', 'jp-kh-Resources-session'),
    idleLeft: figure('idle-left', 'jp-kh-Resources-idle'),
    hoursUsed: figure('gpu-hours-used', 'jp-kh-Resources-hidden'),
    hoursLimit: figure('gpu-hours-limit', 'jp-kh-Resources-hidden'),
    hoursLeft: figure('gpu-hours-left', 'jp-kh-Resources-hidden')
  };

  /** The latest resources, for the indicators; null until the first answer. */
  resources: IResources | null = null;
  onResources: ((resources: IResources) => void) | null = null;

  async refreshResources(): Promise<void> {
    if (this.resourcesInFlight) {
      return;
    }
    this.resourcesInFlight = true;
    try {
      const resources = parseResources(await this.fetchJson('resources'));
      if (resources) {
        this.resources = resources;
        this.drawResources(resources);
        this.onResources?.(resources);
      }
    } finally {
      this.resourcesInFlight = false;
    }
  }

  async refreshRuntime(): Promise<void> {
    this.runtime = parseRuntimeInfo(await this.fetchJson('runtime'));
    this.drawRuntime();
  }

  /** The countdowns, every second (no request). */
  tick(): void {
    if (this.runtime && !this.session.hidden) {
      this.drawCountdowns(this.runtime);
    }
  }

  private drawResources(r: IResources): void {
    const f = this.figures;
    setFigure(f.memoryUsed, formatBytes(r.memory.used), r.memory.used);
    setFigure(f.memoryLimit, r.memory.limit === null ? 'no limit' : formatBytes(r.memory.limit),
      r.memory.limit); // prettier-ignore
    f.memoryUsed.parentElement!.title = `${memoryText(r.memory)} (${r.memory.source})`;
    setBar(this.memoryBar, fraction(r.memory.used, r.memory.limit));
    setFigure(f.cpuUsed, formatCores(r.cpu.used), r.cpu.used);
    setFigure(f.cpuLimit, r.cpu.limit === null ? 'no limit' : `${formatCores(r.cpu.limit)} cores`,
      r.cpu.limit); // prettier-ignore
    f.cpuUsed.parentElement!.title = `${cpuText(r.cpu)} (${r.cpu.source})`;
    setBar(this.cpuBar, fraction(r.cpu.used, r.cpu.limit));
    if (r.drive) {
      setFigure(f.driveUsed, driveText(r.drive), r.drive.used);
      f.driveUsed.dataset.complete = String(r.drive.complete);
      f.driveUsed.title = r.drive.path;
      setBar(this.driveBar, fraction(r.drive.total - r.drive.free, r.drive.total));
    }
    this.gpuList.replaceChildren(
      ...r.gpus.map(gpu => {
        const node = h(
          'div',
          { className: 'jp-kh-Resources-gpu', attrs: { 'data-gpu-uuid': gpu.uuid } },
          row(
            `GPU ${gpu.index}`,
            h('span', { className: 'jp-kh-Resources-gpuName', text: gpu.name })
          ),
          row('', figure('gpu-utilization'), figure('gpu-memory'))
        );
        const [utilization, memory] = Array.from(
          node.querySelectorAll<HTMLElement>('[data-kernelhub-figure]')
        );
        setFigure(utilization, `${gpu.utilization}%`, gpu.utilization);
        setFigure(memory, `${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory_total)}`,
          gpu.memory_used); // prettier-ignore
        node.title = gpuText(gpu);
        const memoryBar = bar('GPU memory');
        setBar(memoryBar, fraction(gpu.memory_used, gpu.memory_total));
        node.append(memoryBar);
        return node;
      })
    );
    this.problem.textContent = r.gpu_problem;
    this.problem.hidden = !r.gpu_problem;
  }

  private drawRuntime(): void {
    const info = this.runtime;
    this.session.hidden = info === null;
    if (info === null) {
      return;
    }
    this.sessionType.textContent = info.current
      ? `Runtime type: ${info.current.runtime_type_label || 'default'}`
      : '';
    const f = this.figures;
    if (info.quota) {
      const q = info.quota;
      this.quotaText.textContent = quotaText(q);
      setFigure(f.hoursUsed, formatHours(q.gpu_hours_week_used), q.gpu_hours_week_used);
      const limit = q.gpu_hours_week_limit;
      setFigure(f.hoursLimit, limit === null ? '' : formatHours(limit), limit);
      const left =
        q.gpu_hours_week_left ??
        (limit === null ? null : Math.max(0, limit - q.gpu_hours_week_used));
      setFigure(f.hoursLeft, left === null ? '' : formatHours(left), left);
      this.quotaText.append(f.hoursUsed, f.hoursLimit, f.hoursLeft);
      setBar(this.quotaBar, fraction(q.gpu_hours_week_used, limit));
      this.quotaBar.title = q.week_resets
        ? `The week resets ${new Date(q.week_resets).toLocaleString()}`
        : '';
    }
    this.quotaText.hidden = this.quotaBar.hidden = info.quota === null;
    this.drawCountdowns(info);
  }

  private drawCountdowns(info: IRuntimeInfo): void {
    const now = new Date();
    const current = info.current;
    const session = current ? sessionText(current, now) : null;
    const left = current ? msUntil(current.stop_at, now) : null;
    setFigure(this.figures.sessionLeft, session ?? '', secondsLeft(left));
    this.figures.sessionLeft.hidden = session === null;
    const idle = current ? idleText(current, now) : null;
    const idleLeft = current ? msUntil(current.idle_stop_at, now) : null;
    setFigure(this.figures.idleLeft, idle ?? '', idle === null ? null : secondsLeft(idleLeft));
    this.figures.idleLeft.hidden = idle === null;
  }

  private readonly memoryBar = bar('RAM');
  private readonly cpuBar = bar('CPU');
  private readonly driveBar = bar('Disk');
  private readonly gpuList = h('div', { className: 'jp-kh-Resources-gpus' });
  private readonly problem = h('div', { className: 'jp-kh-Resources-problem' });
  private readonly session = h('section', {
    className: 'jp-kh-Resources-section',
    attrs: { id: 'kernelhub-resources-session' }
  });
  private readonly sessionType = h('div', { className: 'jp-kh-Resources-type' });
  private readonly quotaText = h('div', {
    className: 'jp-kh-Resources-quota',
    attrs: { id: 'kernelhub-resources-quota' }
  });
  private readonly quotaBar = bar('GPU hours this week');
  private runtime: IRuntimeInfo | null = null;
  private resourcesInFlight = false;
}

/** The compact figures: a button that opens the panel. */
function indicator(id: string, open: () => void): Widget {
  const widget = new Widget({
    node: h('button', {
      className: 'jp-kh-ResourcesIndicator jp-Button jp-mod-minimal',
      title: 'Resources of this runtime: click for details',
      attrs: { type: 'button', 'aria-label': 'Show the Resources panel' }
    })
  });
  widget.id = id;
  widget.node.textContent = 'RAM …';
  widget.node.addEventListener('click', open);
  return widget;
}

const resourcesPlugin: JupyterFrontEndPlugin<void> = {
  id: '@kernelhub/snippets:resources',
  description: "A Resources panel: this runtime's RAM, CPU, disk, GPUs, session and GPU hours.",
  autoStart: true,
  optional: [ICommandPalette, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ): void => {
    const panel = new ResourcesPanel(makeFetcher());
    const { commands, shell } = app;

    let added = false;
    const addPanel = (): void => {
      if (!added) {
        added = true;
        shell.add(panel, 'right', { rank: 900 });
      }
    };

    commands.addCommand(SHOW_RESOURCES_COMMAND, {
      label: 'Show Resources Panel',
      caption: "This runtime's RAM, CPU, disk and GPUs, the session's time left, GPU hours",
      icon: resourcesIcon,
      execute: () => {
        addPanel();
        shell.activateById(panel.id);
        void panel.refreshResources();
        void panel.refreshRuntime();
      }
    });
    palette?.addItem({ command: SHOW_RESOURCES_COMMAND, category: 'Runtime' });

    const open = (): void => void commands.execute(SHOW_RESOURCES_COMMAND);
    const indicators = [indicator(RESOURCES_INDICATOR_ID, open)];
    shell.add(indicators[0], 'top', { rank: 900 });
    if (statusBar) {
      const item = indicator(`${RESOURCES_INDICATOR_ID}-statusbar`, open);
      indicators.push(item);
      statusBar.registerStatusItem('@kernelhub/snippets:resources', {
        item,
        align: 'left',
        rank: 50
      });
    }
    panel.onResources = resources => {
      for (const widget of indicators) {
        widget.node.textContent = indicatorText(resources);
      }
    };

    void app.restored.then(() => {
      addPanel();
      void panel.refreshResources();
      void panel.refreshRuntime();
    });
    let sinceIndicator = 0;
    window.setInterval(() => {
      sinceIndicator += RESOURCES_POLL_SECONDS;
      // the panel every 5 s while someone looks at it; the indicator every 30 s
      if (document.hidden) {
        return;
      }
      if (panel.isVisible || sinceIndicator >= INDICATOR_POLL_SECONDS) {
        sinceIndicator = 0;
        void panel.refreshResources();
      }
    }, RESOURCES_POLL_SECONDS * 1000);
    window.setInterval(() => {
      if (!document.hidden) {
        void panel.refreshRuntime();
      }
    }, RUNTIME_POLL_SECONDS * 1000);
    window.setInterval(() => panel.tick(), 1000);
  }
};

export default resourcesPlugin;
