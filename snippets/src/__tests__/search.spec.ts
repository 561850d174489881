import { fuzzyMatch, highlightSegments, search, tokenize } from '../search';
import { LIBRARY, snippet } from './fixtures';

const ids = (query: string): string[] => search(LIBRARY, query).map(r => r.snippet.id);

describe('fuzzy search over titles, tags and code', () => {
  it('keeps every snippet, in the given order, for an empty query', () => {
    expect(ids('')).toEqual(LIBRARY.map(s => s.id));
    expect(ids('   ')).toEqual(LIBRARY.map(s => s.id));
  });

  it('finds a snippet by a word of its title, ignoring case', () => {
    expect(ids('GPU')[0]).toBe('nvidia-smi');
    expect(ids('csv')).toEqual(['pandas-csv']);
  });

  it('finds a snippet by a tag', () => {
    expect(ids('cuda')).toEqual(['nvidia-smi']);
    expect(ids('performance')).toEqual(['time-cell']);
  });

  it('finds a snippet by its code', () => {
    expect(ids('read_csv')).toEqual(['pandas-csv']);
    expect(ids('pyplot')).toEqual(['plot-matplotlib']);
  });

  it('needs every word of the query to match somewhere', () => {
    expect(ids('pandas csv')).toEqual(['pandas-csv']);
    expect(ids('pandas gpu')).toEqual([]);
  });

  it('matches letters in order as a fuzzy abbreviation', () => {
    expect(ids('pdcsv')).toEqual(['pandas-csv']); // tags "pandas csv data"
    expect(ids('tmcl')).toEqual(['time-cell']); // "Time a cell"
  });

  it('finds nothing for letters that are not there', () => {
    expect(ids('zzzq')).toEqual([]);
  });

  it('ranks a title match above a tag match above a code match', () => {
    const library = [
      snippet({ id: 'in-code', title: 'Other', cells: [{ cell_type: 'code', source: 'plot()' }] }),
      snippet({ id: 'in-tags', title: 'Another', tags: ['plot'] }),
      snippet({ id: 'in-title', title: 'Plot things' })
    ];
    expect(search(library, 'plot').map(r => r.snippet.id)).toEqual([
      'in-title',
      'in-tags',
      'in-code'
    ]);
  });

  it('ranks a substring above a scattered subsequence', () => {
    const library = [
      snippet({ id: 'scattered', title: 'Copy all things' }),
      snippet({ id: 'substring', title: 'Catalog' })
    ];
    expect(search(library, 'cat').map(r => r.snippet.id)).toEqual(['substring', 'scattered']);
  });

  it('ranks a match at the start of a word above one inside a word', () => {
    const library = [
      snippet({ id: 'inside', title: 'Concatenate' }),
      snippet({ id: 'word-start', title: 'A cat' })
    ];
    expect(search(library, 'cat').map(r => r.snippet.id)).toEqual(['word-start', 'inside']);
  });

  it('breaks ties by title', () => {
    const library = [snippet({ id: 'b', title: 'Plot beta' }), snippet({ id: 'a', title: 'Plot alpha' })];
    expect(search(library, 'plot').map(r => r.snippet.id)).toEqual(['a', 'b']);
  });

  it('does not match scattered letters in a description', () => {
    const library = [snippet({ id: 'd', title: 'x', description: 'go read each entry today' })];
    expect(search(library, 'greet')).toEqual([]);
    expect(search(library, 'entry').map(r => r.snippet.id)).toEqual(['d']);
  });

  it('does not match scattered letters in code', () => {
    const library = [
      snippet({ id: 'code', title: 'x', cells: [{ cell_type: 'code', source: 'p = l + o + t' }] })
    ];
    expect(search(library, 'plot')).toEqual([]);
  });

  it('reports which title characters matched, for highlighting', () => {
    const [result] = search(LIBRARY, 'csv');
    expect(result.titleIndices).toEqual([7, 8, 9]); // "Load a CSV with pandas"
  });
});

describe('the pieces of the search', () => {
  it('splits a query into lower-case words', () => {
    expect(tokenize('  Load  CSV ')).toEqual(['load', 'csv']);
  });

  it('scores a substring at the start of a word, with its positions', () => {
    const match = fuzzyMatch('csv', 'read CSV files');
    expect(match?.indices).toEqual([5, 6, 7]);
    expect(match!.score).toBeGreaterThan(fuzzyMatch('sv', 'read CSV files')!.score);
  });

  it('treats camelCase humps as word starts', () => {
    expect(fuzzyMatch('frame', 'DataFrame')!.score).toBeGreaterThan(
      fuzzyMatch('rame', 'DataFrame')!.score
    );
  });

  it('rejects a subsequence spread too far apart', () => {
    expect(fuzzyMatch('ab', 'a' + ' '.repeat(50) + 'b')).toBeNull();
    expect(fuzzyMatch('ab', 'a-b')).not.toBeNull();
  });

  it('cuts a title into matched and unmatched runs', () => {
    expect(highlightSegments('Load CSV', [5, 6, 7])).toEqual([
      { text: 'Load ', match: false },
      { text: 'CSV', match: true }
    ]);
    expect(highlightSegments('abc', [])).toEqual([{ text: 'abc', match: false }]);
  });
});
