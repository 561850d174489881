import { parseListing, RequestFn, SnippetsApiError, SnippetsClient } from '../api';

const BASE = 'http://127.0.0.1:8888/user/alice/';
const URL = `${BASE}kernelhub-snippets/snippets`;

interface ISent {
  url: string;
  init: RequestInit;
}

/** A client whose requests get ``reply`` and are recorded in ``sent``. */
function clientReplying(reply: () => Response | Promise<Response>): {
  client: SnippetsClient;
  sent: ISent[];
} {
  const sent: ISent[] = [];
  const request: RequestFn = async (url, init) => {
    sent.push({ url, init });
    return reply();
  };
  return { client: new SnippetsClient(BASE, request), sent };
}

const json = (body: unknown, status = 200): Response =>
  new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });

const CELL = { cell_type: 'code', source: 'print(1)' };
const SNIPPET = {
  id: 'hello',
  source: 'user',
  title: 'Hello',
  description: '',
  tags: ['x'],
  language: 'python',
  category: 'General',
  requires: [],
  cells: [CELL]
};

async function failure(promise: Promise<unknown>): Promise<SnippetsApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(SnippetsApiError);
    return error as SnippetsApiError;
  }
  throw new Error('expected the call to fail');
}

describe('the snippets API client', () => {
  it('lists snippets and problems from GET snippets under the base URL', async () => {
    const problem = { source: 'user', path: '/home/jovyan/.kernelhub/snippets/bad.md', reason: 'title is missing' };
    const { client, sent } = clientReplying(() => json({ snippets: [SNIPPET], problems: [problem] }));
    const listing = await client.list();
    expect(sent).toEqual([{ url: URL, init: { method: 'GET' } }]);
    expect(listing.snippets.map(s => s.id)).toEqual(['hello']);
    expect(listing.problems).toEqual([problem]);
  });

  it('joins a base URL without a trailing slash too', async () => {
    const sent: string[] = [];
    const client = new SnippetsClient('http://h/base', async url => {
      sent.push(url);
      return json({ snippets: [], problems: [] });
    });
    await client.list();
    expect(sent).toEqual(['http://h/base/kernelhub-snippets/snippets']);
  });

  it('saves with a JSON POST and returns the saved snippet', async () => {
    const { client, sent } = clientReplying(() => json(SNIPPET, 201));
    const saved = await client.save({ title: 'Hello', cells: [{ cell_type: 'code', source: 'print(1)' }] });
    expect(saved.id).toBe('hello');
    expect(sent[0].url).toBe(URL);
    expect(sent[0].init.method).toBe('POST');
    expect(JSON.parse(String(sent[0].init.body))).toEqual({ title: 'Hello', cells: [CELL] });
    expect(sent[0].init.headers).toEqual({ 'Content-Type': 'application/json' });
  });

  it('deletes with DELETE snippets/{id}, escaping the id', async () => {
    const { client, sent } = clientReplying(() => new Response(null, { status: 204 }));
    await client.remove('my snippet');
    expect(sent[0]).toEqual({ url: `${URL}/my%20snippet`, init: { method: 'DELETE' } });
  });
});

describe('API errors become one readable message', () => {
  it("uses the server's own message", async () => {
    const { client } = clientReplying(() =>
      json({ status: 400, message: 'title is missing or empty' }, 400)
    );
    const error = await failure(client.save({ title: '', cells: [] }));
    expect(error.status).toBe(400);
    expect(error.message).toBe('Could not save the snippet: title is missing or empty.');
  });

  it('explains a 403 for a built-in snippet with the server message', async () => {
    const { client } = clientReplying(() =>
      json({ status: 403, message: "'pandas-csv' is built in; save your own to replace it" }, 403)
    );
    const error = await failure(client.remove('pandas-csv'));
    expect(error.message).toContain('is built in');
  });

  it('says the server extension is missing on an HTML 404', async () => {
    const { client } = clientReplying(
      () => new Response('<html>Not Found</html>', { status: 404, statusText: 'Not Found' })
    );
    const error = await failure(client.list());
    expect(error.status).toBe(404);
    expect(error.message).toMatch(/server extension is not running/);
  });

  it('names the status of any other failure without a message', async () => {
    const { client } = clientReplying(
      () => new Response('oops', { status: 502, statusText: 'Bad Gateway' })
    );
    expect((await failure(client.list())).message).toBe(
      'Could not load the snippets: the server answered HTTP 502 Bad Gateway.'
    );
  });

  it('reports a server that cannot be reached', async () => {
    const { client } = clientReplying(() => {
      throw new TypeError('Failed to fetch');
    });
    const error = await failure(client.list());
    expect(error.status).toBeNull();
    expect(error.message).toBe(
      'Could not load the snippets: the server did not answer: Failed to fetch.'
    );
  });

  it('reports a reply that is not JSON', async () => {
    const { client } = clientReplying(() => new Response('<html>login</html>', { status: 200 }));
    expect((await failure(client.list())).message).toMatch(/not JSON/);
  });

  it('reports a reply without a snippet list', async () => {
    const { client } = clientReplying(() => json({ hello: 1 }));
    expect((await failure(client.list())).message).toMatch(/no snippet list/);
  });
});

describe('a listing never breaks on one bad entry', () => {
  it('turns a malformed snippet into a problem and keeps the others', () => {
    const listing = parseListing({
      snippets: [
        SNIPPET,
        { id: 'no-cells', source: 'user', title: 'x' },
        { id: 'bad-cell', source: 'user', title: 'x', cells: [{ cell_type: 'raw', source: '' }] },
        { id: 'bad-source', source: 'elsewhere', title: 'x', cells: [] },
        'not an object'
      ],
      problems: []
    });
    expect(listing.snippets.map(s => s.id)).toEqual(['hello']);
    expect(listing.problems.map(p => p.path)).toEqual([
      'no-cells',
      'bad-cell',
      'bad-source',
      '(no id)'
    ]);
  });

  it('fills in optional fields the server left out', () => {
    const [snippet] = parseListing({
      snippets: [{ id: 'min', source: 'site', title: 'Minimal', cells: [CELL] }]
    }).snippets;
    expect(snippet).toEqual({
      id: 'min',
      source: 'site',
      title: 'Minimal',
      description: '',
      tags: [],
      language: 'python',
      category: 'General',
      requires: [],
      cells: [CELL]
    });
  });

  it('keeps problems with missing fields readable', () => {
    expect(parseListing({ snippets: [], problems: [{ reason: 'empty file' }, 7] }).problems).toEqual([
      { source: 'unknown', path: '(unknown file)', reason: 'empty file' }
    ]);
  });
});
