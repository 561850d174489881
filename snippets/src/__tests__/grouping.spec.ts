import { categoryNames, groupByCategory } from '../grouping';
import { LIBRARY, snippet } from './fixtures';

describe('snippets grouped by category', () => {
  it('lists categories alphabetically, snippets by title in each', () => {
    const groups = groupByCategory(LIBRARY);
    expect(groups.map(g => g.name)).toEqual(['Data', 'Runtime', 'Visualization']);
    expect(groups[1].snippets.map(s => s.title)).toEqual(['Check the GPU', 'Time a cell']);
  });

  it('groups categories that differ only in case, under the first spelling seen', () => {
    const groups = groupByCategory([
      snippet({ id: 'a', category: 'My snippets' }),
      snippet({ id: 'b', category: 'my snippets' })
    ]);
    expect(groups).toHaveLength(1);
    expect(groups[0].name).toBe('My snippets');
    expect(groups[0].snippets).toHaveLength(2);
  });

  it('puts a snippet without a category in General', () => {
    expect(groupByCategory([snippet({ id: 'a', category: '  ' })])[0].name).toBe('General');
  });

  it('is empty for no snippets', () => {
    expect(groupByCategory([])).toEqual([]);
  });

  it('offers the categories in use, and General, when saving', () => {
    expect(categoryNames(LIBRARY)).toEqual(['General', 'Data', 'Runtime', 'Visualization']);
    expect(categoryNames([snippet({ id: 'a' })])).toEqual(['General']);
  });
});
