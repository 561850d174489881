/**
 * The snippet library as the server extension's REST API serves it
 * (`GET {baseUrl}kernelhub-snippets/snippets`, see kernelhub_snippets/handlers.py).
 */

/** Where a snippet comes from; a later source wins an id clash (user > site > builtin). */
export type SnippetSource = 'builtin' | 'site' | 'user';

export const SOURCES: readonly SnippetSource[] = ['builtin', 'site', 'user'];

export interface ISnippetCell {
  cell_type: 'code' | 'markdown';
  source: string;
}

export interface ISnippet {
  id: string;
  source: SnippetSource;
  title: string;
  description: string;
  tags: string[];
  language: string;
  category: string;
  requires: string[];
  cells: ISnippetCell[];
}

/** A snippet file the server skipped, and why: shown next to the snippets, never an error. */
export interface IProblem {
  source: string;
  path: string;
  reason: string;
}

export interface IListing {
  snippets: ISnippet[];
  problems: IProblem[];
}

/** The body of `POST snippets`: a snippet without its source (the server makes it `user`). */
export interface INewSnippet {
  id?: string;
  title: string;
  description?: string;
  tags?: string[];
  language?: string;
  category?: string;
  cells: ISnippetCell[];
}
