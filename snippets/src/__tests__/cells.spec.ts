import {
  fromNotebookCells,
  parseTags,
  previewText,
  suggestTitle,
  toNotebookCells
} from '../cells';
import { LIBRARY, snippet } from './fixtures';

describe('a snippet becomes notebook cells', () => {
  it('keeps code and markdown cells, in order', () => {
    const cells = toNotebookCells(LIBRARY[0]);
    expect(cells.map(c => c.cell_type)).toEqual(['markdown', 'code', 'code']);
    expect(cells[1].source).toBe('import pandas as pd\ndf = pd.read_csv("data.csv")');
  });

  it('marks code cells trusted, as inserting a cell does, and markdown cells not', () => {
    const [markdown, code] = toNotebookCells(LIBRARY[0]);
    expect(code.metadata).toEqual({ trusted: true });
    expect(markdown.metadata).toEqual({});
  });

  it('gives each insertion fresh cell objects', () => {
    const first = toNotebookCells(LIBRARY[1]);
    first[0].source = 'changed';
    expect(toNotebookCells(LIBRARY[1])[0].source).toBe('!nvidia-smi');
  });
});

describe('selected cells become a snippet', () => {
  it('keeps code and markdown cells, drops raw and empty ones', () => {
    expect(
      fromNotebookCells([
        { cell_type: 'markdown', source: '# Title' },
        { cell_type: 'raw', source: 'raw text' },
        { cell_type: 'code', source: '   \n' },
        { cell_type: 'code', source: 'x = 1\n\n' }
      ])
    ).toEqual([
      { cell_type: 'markdown', source: '# Title' },
      { cell_type: 'code', source: 'x = 1' }
    ]);
  });

  it('proposes the first markdown heading as the title', () => {
    const cells = fromNotebookCells([
      { cell_type: 'code', source: '# a comment\nx = 1' },
      { cell_type: 'markdown', source: 'Intro\n\n## Train a model ##' }
    ]);
    expect(suggestTitle(cells)).toBe('Train a model');
  });

  it('else the first comment of the code, but not a shebang or a magic', () => {
    expect(suggestTitle([{ cell_type: 'code', source: '#!/bin/sh\n# Count words\nwc' }])).toBe(
      'Count words'
    );
    expect(suggestTitle([{ cell_type: 'code', source: 'x = 1' }])).toBe('');
  });

  it('never proposes a title longer than the server takes', () => {
    expect(suggestTitle([{ cell_type: 'markdown', source: `# ${'x'.repeat(300)}` }])).toHaveLength(
      120
    );
  });

  it('reads tags from a comma-separated field', () => {
    expect(parseTags(' pandas, csv,, data ,pandas')).toEqual(['pandas', 'csv', 'data']);
    expect(parseTags('  ')).toEqual([]);
  });
});

describe('the preview text', () => {
  it('shows code as is and markdown as comments, cells apart', () => {
    const text = previewText(
      snippet({
        id: 'x',
        cells: [
          { cell_type: 'markdown', source: 'Note\n' },
          { cell_type: 'code', source: 'x = 1' }
        ]
      })
    );
    expect(text).toBe('# Note\n#\n\nx = 1');
  });
});
