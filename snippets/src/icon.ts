import { LabIcon } from '@jupyterlab/ui-components';

/** Angle brackets around a plus: the snippets panel's tab. */
const SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M7.4 18.6 1 12l6.4-6.6 1.4 1.4L3.8 12l5 5.2zm9.2 0-1.4-1.4 5-5.2-5-5.2 1.4-1.4L23 12zM11 8h2v3h3v2h-3v3h-2v-3H8v-2h3z"/>
</svg>`;

export const snippetsIcon = new LabIcon({ name: 'kernelhub-snippets:icon', svgstr: SVG });
