import {
  currentTypeName,
  parseInfo,
  parseType,
  RuntimeApiError,
  RuntimeClient,
  switchUrl,
  typeLimits
} from '../runtimeApi';

const INFO = {
  hub: true,
  user: 'alice',
  server: '',
  current: { name: '', label: 'Default', runtime_type: 'cpu', status: 'running' },
  runtimes: [
    { name: '', runtime_type: 'cpu', status: 'running' },
    { name: 7 },
    'junk'
  ],
  types: [
    { name: 'cpu', display_name: 'None (CPU)', mem_limit: '1G', cpu_limit: 1, gpus: 0, available: true },
    { name: 'gpu', display_name: 'GPU', gpus: 1, available: false, reason: 'all GPUs are in use' },
    { display_name: 'no name' }
  ],
  default_type: 'cpu'
};

function reply(status: number, body: unknown): Promise<Response> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return Promise.resolve({
    ok: status < 400,
    status,
    statusText: '',
    text: () => Promise.resolve(text)
  } as Response);
}

describe('parseInfo', () => {
  it('keeps well-formed runtimes and types and drops the rest', () => {
    const info = parseInfo(INFO);
    expect(info.hub).toBe(true);
    expect(info.runtimes.map(r => r.name)).toEqual(['']);
    expect(info.types.map(t => t.name)).toEqual(['cpu', 'gpu']);
    expect(info.types[1]).toMatchObject({ available: false, reason: 'all GPUs are in use' });
    expect(currentTypeName(info)).toBe('cpu');
  });

  it.each([[null], [{}], [{ hub: false }], ['text'], [[]]])('%p is "no hub"', body => {
    expect(parseInfo(body).hub).toBe(false);
  });
});

describe('typeLimits', () => {
  it.each([
    [{ name: 'cpu', mem_limit: '1G', cpu_limit: 1, gpus: 0 }, '1G RAM · 1 CPU · no GPU'],
    [{ name: 'gpu', mem_limit: '16G', cpu_limit: 4, gpus: 2 }, '16G RAM · 4 CPUs · 2 GPUs'],
    [{ name: 'bare' }, 'no GPU']
  ])('%p -> %s', (type, text) => {
    expect(typeLimits(parseType(type)!)).toBe(text);
  });
});

describe('switchUrl', () => {
  it('reopens the page now open, its path escaped whole', () => {
    expect(switchUrl('/hub/kernelhub/switch/alice/', '/user/alice/notebooks/a b.ipynb', '')).toBe(
      '/hub/kernelhub/switch/alice/?next=%2Fuser%2Falice%2Fnotebooks%2Fa%20b.ipynb'
    );
  });
});

describe('RuntimeClient', () => {
  it('gives the hub its refusal message unchanged', async () => {
    const client = new RuntimeClient('/user/alice/', () =>
      reply(403, { status: 403, message: 'runtime limit reached: 1 of 1 running' })
    );
    await expect(client.switchTo('cpu')).rejects.toEqual(
      new RuntimeApiError('runtime limit reached: 1 of 1 running.', 403)
    );
  });

  it('posts the chosen type and returns the switch page', async () => {
    const calls: [string, RequestInit][] = [];
    const client = new RuntimeClient('/user/alice/', (url, init) => {
      calls.push([url, init]);
      return reply(202, { status: 202, switch_url: '/hub/kernelhub/switch/alice/' });
    });
    expect(await client.switchTo('cpu-large')).toBe('/hub/kernelhub/switch/alice/');
    expect(calls[0][0]).toBe('/user/alice/kernelhub/runtime/switch');
    expect(JSON.parse(String(calls[0][1].body))).toEqual({ runtime_type: 'cpu-large' });
  });

  it('says so when the runtime does not answer', async () => {
    const client = new RuntimeClient('/user/alice/', () => Promise.reject(new Error('down')));
    await expect(client.stop('')).rejects.toThrow('this runtime did not answer');
  });
});
