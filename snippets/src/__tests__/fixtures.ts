import { ISnippet } from '../types';

/** A snippet with defaults for every field the test does not care about. */
export function snippet(fields: Partial<ISnippet> & { id: string }): ISnippet {
  return {
    source: 'builtin',
    title: fields.id,
    description: '',
    tags: [],
    language: 'python',
    category: 'General',
    requires: [],
    cells: [{ cell_type: 'code', source: 'pass' }],
    ...fields
  };
}

export const LIBRARY: ISnippet[] = [
  snippet({
    id: 'pandas-csv',
    title: 'Load a CSV with pandas',
    tags: ['pandas', 'csv', 'data'],
    category: 'Data',
    description: 'Read a CSV file from your drive into a DataFrame.',
    cells: [
      { cell_type: 'markdown', source: 'Reads `data.csv`.' },
      { cell_type: 'code', source: 'import pandas as pd\ndf = pd.read_csv("data.csv")' },
      { cell_type: 'code', source: 'df.head()' }
    ]
  }),
  snippet({
    id: 'nvidia-smi',
    title: 'Check the GPU',
    tags: ['gpu', 'cuda'],
    category: 'Runtime',
    cells: [{ cell_type: 'code', source: '!nvidia-smi' }]
  }),
  snippet({
    id: 'plot-matplotlib',
    title: 'Plot a line chart',
    tags: ['matplotlib', 'plot'],
    category: 'Visualization',
    cells: [{ cell_type: 'code', source: 'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])' }]
  }),
  snippet({
    id: 'time-cell',
    title: 'Time a cell',
    tags: ['timing', 'performance'],
    category: 'Runtime',
    cells: [{ cell_type: 'code', source: '%%time\nsum(range(10**6))' }]
  })
];
