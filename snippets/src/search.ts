/**
 * Fuzzy search over snippets: every word of the query must match the title, the tags,
 * the category, the description or the code. A word scores best as a substring at the
 * start of a word, then as a substring anywhere, then (in the title and the tags) as a
 * subsequence of letters in order ("pdcsv" finds the tags "pandas csv"); and a match in
 * the title counts more than one in the tags, which counts more than one in the code.
 */
import { ISnippet } from './types';

export interface IMatch {
  score: number;
  /** Positions in the searched text that matched, for highlighting. */
  indices: number[];
}

export interface IRanked {
  snippet: ISnippet;
  score: number;
  /** Positions in the title that matched one of the query's words. */
  titleIndices: number[];
}

/**
 * How much a match in each field counts. Letters in order (a subsequence) count in the
 * short fields only: in a description or code they would match nearly anything.
 */
export const FIELD_WEIGHTS = {
  title: 1,
  tags: 0.9,
  category: 0.6,
  description: 0.5,
  code: 0.4
} as const;

type Field = keyof typeof FIELD_WEIGHTS;

const SUBSEQUENCE_FIELDS: ReadonlySet<Field> = new Set<Field>(['title', 'tags']);

const SUBSTRING_SCORE = 100;
const WORD_START_BONUS = 50;
const TEXT_START_BONUS = 20;
const SUBSEQUENCE_SCORE = 60; // always below any substring match
/** Code and descriptions are long: a subsequence spread wider than this is chance. */
const MAX_SPREAD = (length: number): number => length * 3 + 4;
const MAX_CODE_CHARS = 20_000;

export function tokenize(query: string): string[] {
  return query.toLowerCase().split(/\s+/).filter(Boolean);
}

/** True where text[i] starts a word (after a non-alphanumeric character, or a-Z). */
function isWordStart(text: string, i: number): boolean {
  if (i === 0) {
    return true;
  }
  const before = text[i - 1];
  const here = text[i];
  if (!/[\p{L}\p{N}]/u.test(before)) {
    return true;
  }
  return /\p{Ll}/u.test(before) && /\p{Lu}/u.test(here); // camelCase
}

/**
 * How well ``needle`` (lower case) matches ``text``: null for no match. A substring
 * beats a subsequence; a tighter subsequence, and one hitting word starts, beats a
 * looser one.
 */
export function fuzzyMatch(needle: string, text: string, allowSubsequence = true): IMatch | null {
  if (!needle) {
    return { score: 0, indices: [] };
  }
  const haystack = text.toLowerCase();
  let best: IMatch | null = null;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + 1)) {
    let score = SUBSTRING_SCORE - Math.min(at, 40) * 0.25;
    if (isWordStart(text, at)) {
      score += WORD_START_BONUS;
    }
    if (at === 0) {
      score += TEXT_START_BONUS;
    }
    if (!best || score > best.score) {
      best = { score, indices: range(at, needle.length) };
    }
    if (at === 0) {
      break;
    }
  }
  if (best || !allowSubsequence || needle.length < 2) {
    return best;
  }
  return subsequenceMatch(needle, text, haystack);
}

/** The tightest in-order occurrence of needle's letters, if tight enough to mean something. */
function subsequenceMatch(needle: string, text: string, haystack: string): IMatch | null {
  let best: IMatch | null = null;
  let bestSpread = Infinity;
  for (let start = haystack.indexOf(needle[0]); start !== -1; ) {
    const indices = [start];
    let at = start;
    for (let k = 1; k < needle.length && at !== -1; k++) {
      at = haystack.indexOf(needle[k], at + 1);
      if (at !== -1) {
        indices.push(at);
      }
    }
    if (indices.length < needle.length) {
      break; // later starts cannot find the letters either
    }
    const spread = indices[indices.length - 1] - start + 1;
    if (spread < bestSpread && spread <= MAX_SPREAD(needle.length)) {
      const wordStarts = indices.filter(i => isWordStart(text, i)).length;
      const score =
        SUBSEQUENCE_SCORE * 0.6 * (needle.length / spread) +
        SUBSEQUENCE_SCORE * 0.4 * (wordStarts / needle.length);
      best = { score, indices };
      bestSpread = spread;
    }
    start = haystack.indexOf(needle[0], start + 1);
  }
  return best;
}

function fields(snippet: ISnippet): Record<Field, string> {
  const code = snippet.cells
    .filter(cell => cell.cell_type === 'code')
    .map(cell => cell.source)
    .join('\n')
    .slice(0, MAX_CODE_CHARS);
  return {
    title: snippet.title,
    tags: snippet.tags.join(' '),
    category: snippet.category,
    description: snippet.description,
    code
  };
}

/** One snippet against the query's words: null unless every word matches somewhere. */
export function scoreSnippet(snippet: ISnippet, words: string[]): IRanked | null {
  const texts = fields(snippet);
  let total = 0;
  const titleIndices = new Set<number>();
  for (const word of words) {
    let bestWord = 0;
    for (const field of Object.keys(FIELD_WEIGHTS) as Field[]) {
      const match = fuzzyMatch(word, texts[field], SUBSEQUENCE_FIELDS.has(field));
      if (!match) {
        continue;
      }
      bestWord = Math.max(bestWord, match.score * FIELD_WEIGHTS[field]);
      if (field === 'title') {
        match.indices.forEach(i => titleIndices.add(i));
      }
    }
    if (bestWord === 0) {
      return null;
    }
    total += bestWord;
  }
  return { snippet, score: total, titleIndices: [...titleIndices].sort((a, b) => a - b) };
}

/**
 * The snippets matching ``query``, best first (ties by title). An empty query keeps
 * every snippet in the order given (the server's: by category, then title).
 */
export function search(snippets: readonly ISnippet[], query: string): IRanked[] {
  const words = tokenize(query);
  if (words.length === 0) {
    return snippets.map(snippet => ({ snippet, score: 0, titleIndices: [] }));
  }
  const ranked: IRanked[] = [];
  for (const snippet of snippets) {
    const result = scoreSnippet(snippet, words);
    if (result) {
      ranked.push(result);
    }
  }
  return ranked.sort(
    (a, b) => b.score - a.score || a.snippet.title.localeCompare(b.snippet.title)
  );
}

export interface ISegment {
  text: string;
  match: boolean;
}

/** ``text`` cut into runs of matched and unmatched characters, for highlighting. */
export function highlightSegments(text: string, indices: readonly number[]): ISegment[] {
  const matched = new Set(indices);
  const segments: ISegment[] = [];
  for (let i = 0; i < text.length; i++) {
    const match = matched.has(i);
    const last = segments[segments.length - 1];
    if (last && last.match === match) {
      last.text += text[i];
    } else {
      segments.push({ text: text[i], match });
    }
  }
  return segments;
}

function range(start: number, length: number): number[] {
  return Array.from({ length }, (_, k) => start + k);
}
