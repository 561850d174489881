/** Snippets by category, as the side panel lists them. */
import { ISnippet } from './types';

export interface ICategory {
  name: string;
  snippets: ISnippet[];
}

/**
 * Categories in alphabetical order (case-insensitive), snippets in each by title. A
 * snippet without a category is in "General", as the server defaults it.
 */
export function groupByCategory(snippets: readonly ISnippet[]): ICategory[] {
  const groups = new Map<string, ISnippet[]>();
  for (const snippet of snippets) {
    const name = snippet.category.trim() || 'General';
    const key = name.toLowerCase();
    const group = groups.get(key);
    if (group) {
      group.push(snippet);
    } else {
      groups.set(key, [snippet]);
    }
  }
  const categories = [...groups.values()].map(group => ({
    name: group[0].category.trim() || 'General',
    snippets: [...group].sort(byTitle)
  }));
  return categories.sort((a, b) => compareText(a.name, b.name));
}

/** The categories a save form offers: those in use, in order, "General" included. */
export function categoryNames(snippets: readonly ISnippet[]): string[] {
  const names = groupByCategory(snippets).map(category => category.name);
  return names.some(name => name.toLowerCase() === 'general') ? names : ['General', ...names];
}

function byTitle(a: ISnippet, b: ISnippet): number {
  return compareText(a.title, b.title) || a.id.localeCompare(b.id);
}

function compareText(a: string, b: string): number {
  return a.localeCompare(b, undefined, { sensitivity: 'base' });
}
