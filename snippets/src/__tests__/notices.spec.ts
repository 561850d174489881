import { IQuotaNotice, noticesToShow, parseNotices } from '../notices';

const OPENED = new Date('2026-11-30T12:00:00Z');

function notice(id: string, kind: IQuotaNotice['kind'], extra: Partial<IQuotaNotice> = {}) {
  return {
    id,
    kind,
    title: kind,
    time: '2026-11-30T12:05:00Z',
    message: `message ${id}`,
    server: '',
    this_server: true,
    ...extra
  } as IQuotaNotice;
}

describe('noticesToShow', () => {
  it.each([
    ['a warning about this runtime', notice('w1', 'warn'), true],
    ['a warning about another runtime', notice('w2', 'warn', { this_server: false }), false],
    ['another runtime stopped after the page opened', notice('s1', 'stop', { this_server: false }), true],
    [
      'another runtime stopped before the page opened',
      notice('s2', 'stop', { this_server: false, time: '2026-11-30T11:00:00Z' }),
      false
    ],
    ['this runtime stopped (the page says so itself)', notice('s3', 'stop'), false],
    ['GPU runtimes blocked', notice('flag', 'flag', { server: '', this_server: false }), true]
  ])('%s: shown=%s', (_, given, expected) => {
    expect(noticesToShow([given], new Set(), OPENED).length).toBe(expected ? 1 : 0);
  });

  it('shows each notice once, oldest first', () => {
    const newest = notice('w2', 'warn', { time: '2026-11-30T12:10:00Z' });
    const older = notice('w1', 'warn');
    expect(noticesToShow([newest, older], new Set(), OPENED).map(n => n.id)).toEqual(['w1', 'w2']);
    expect(noticesToShow([newest, older], new Set(['w1']), OPENED).map(n => n.id)).toEqual(['w2']);
  });
});

describe('parseNotices', () => {
  it.each([null, 'text', { notices: 'x' }, {}])('is empty for %p', body => {
    expect(parseNotices(body)).toEqual([]);
  });

  it('keeps only well-formed notices', () => {
    const good = notice('w1', 'warn');
    expect(parseNotices({ notices: [good, { id: 3 }, null] })).toEqual([good]);
  });
});
