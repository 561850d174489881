import {
  countdownText,
  driveText,
  formatBytes,
  formatCores,
  fraction,
  idleText,
  indicatorText,
  ISession,
  memoryText,
  parseResources,
  parseRuntimeInfo,
  quotaText,
  sessionText
} from '../resources';

const MIB = 2 ** 20;
const GIB = 2 ** 30;

const RESOURCES = {
  memory: { used: 312 * MIB, limit: GIB, source: 'cgroup v1' },
  cpu: { used: 0.25, limit: 1, source: 'cgroup v1' },
  drive: { path: '/home/jovyan', used: 1.2 * GIB, complete: true, free: 40 * GIB, total: 100 * GIB },
  gpus: [
    {
      index: 0,
      uuid: 'GPU-1',
      name: 'NVIDIA H100',
      utilization: 97,
      memory_used: 3 * GIB,
      memory_total: 80 * GIB
    }
  ],
  gpu_problem: '',
  time: '2026-12-01T12:00:00+00:00'
};

function session(extra: Partial<ISession> = {}): ISession {
  return {
    name: '',
    label: 'default',
    runtime_type: 'cpu',
    runtime_type_label: 'CPU',
    status: 'running',
    started: '2026-12-01T10:00:00Z',
    age: '2 h',
    time_left: '6 h',
    stop_at: null,
    idle_stop_at: null,
    idle_warning: false,
    ...extra
  };
}

describe('formatBytes (binary units: 1 GB = 1024 MB)', () => {
  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [1536, '1.5 KB'],
    [312 * MIB, '312 MB'],
    [512 * MIB, '512 MB'],
    [GIB, '1.0 GB'],
    [1023.9 * MIB, '1.0 GB'],
    [1.25 * GIB, '1.3 GB'],
    [80 * GIB, '80 GB'],
    [null, '—'],
    [-1, '—'],
    [Number.NaN, '—']
  ])('%p -> %p', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('formatCores', () => {
  it.each([
    [0, '0'],
    [1, '1'],
    [0.25, '0.25'],
    [1.5, '1.5'],
    [0.333, '0.33'],
    [12.34, '12.3'],
    [null, '—']
  ])('%p -> %p', (cores, text) => {
    expect(formatCores(cores)).toBe(text);
  });
});

describe('parseResources never throws', () => {
  it.each([null, undefined, 'text', 42, [], {}, { memory: 'x' }, { memory: null }])(
    'is null for %p',
    body => {
      expect(parseResources(body)).toBeNull();
    }
  );

  it('reads a full answer', () => {
    const parsed = parseResources(RESOURCES);
    expect(parsed?.memory).toEqual(RESOURCES.memory);
    expect(parsed?.drive).toEqual(RESOURCES.drive);
    expect(parsed?.gpus).toEqual(RESOURCES.gpus);
  });

  it('turns malformed fields into unknowns', () => {
    const parsed = parseResources({
      memory: { used: '12', limit: null },
      cpu: 'busy',
      drive: [],
      gpus: [null, 'x', { name: 5 }]
    });
    expect(parsed?.memory).toEqual({ used: null, limit: null, source: '' });
    expect(parsed?.cpu).toEqual({ used: null, limit: null, source: '' });
    expect(parsed?.drive).toBeNull();
    expect(parsed?.gpus).toEqual([
      { index: 0, uuid: '', name: 'GPU', utilization: 0, memory_used: 0, memory_total: 0 }
    ]);
  });
});

describe('texts', () => {
  it.each([
    [{ used: 312 * MIB, limit: GIB, source: '' }, '312 MB / 1.0 GB'],
    [{ used: 312 * MIB, limit: null, source: '' }, '312 MB / no limit'],
    [{ used: null, limit: null, source: '' }, '— / no limit']
  ])('memory %p', (memory, text) => {
    expect(memoryText(memory)).toBe(text);
  });

  it.each([
    [RESOURCES.drive, '1.2 GB used, 40 GB free of 100 GB'],
    [{ ...RESOURCES.drive, complete: false }, 'at least 1.2 GB used, 40 GB free of 100 GB'],
    [{ ...RESOURCES.drive, used: null }, 'size unknown, 40 GB free of 100 GB']
  ])('drive %p', (drive, text) => {
    expect(driveText(drive)).toBe(text);
  });

  it('indicator', () => {
    expect(indicatorText(parseResources(RESOURCES)!)).toBe(
      'RAM 312 MB / 1.0 GB · Disk 1.2 GB · GPU 97%'
    );
    const partial = parseResources({ ...RESOURCES, gpus: [], drive: { ...RESOURCES.drive, complete: false } });
    expect(indicatorText(partial!)).toBe('RAM 312 MB / 1.0 GB · Disk ≥1.2 GB');
  });

  it.each([
    [5, 10, 0.5],
    [20, 10, 1],
    [5, null, null],
    [null, 10, null],
    [5, 0, null]
  ])('fraction(%p, %p) = %p', (used, limit, part) => {
    expect(fraction(used, limit)).toBe(part);
  });
});

describe('countdowns', () => {
  const NOW = new Date('2026-12-01T12:00:00Z');

  it.each([
    [0, '0:00'],
    [-5000, '0:00'],
    [65_000, '1:05'],
    [599_999, '9:59'],
    [600_000, '10 min'],
    [3_599_000, '59 min'],
    [3_600_000 + 5 * 60_000, '1 h 05 min']
  ])('%p ms -> %p', (ms, text) => {
    expect(countdownText(ms)).toBe(text);
  });

  it('counts the session down to stop_at', () => {
    const at = new Date(NOW.getTime() + 3 * 3_600_000 + 12 * 60_000);
    const text = sessionText(session({ stop_at: at.toISOString() }), NOW);
    const clock = `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
    expect(text).toBe(`Session: 3 h 12 min left (stops at ${clock})`);
  });

  it.each([
    [session({ time_left: 'no limit' }), 'Session: no limit'],
    [session({ time_left: '' }), null],
    [session({ stop_at: 'not a time', time_left: '2 h' }), 'Session: 2 h']
  ])('without a stop time %#', (current, text) => {
    expect(sessionText(current, NOW)).toBe(text);
  });

  it.each([
    [{ idle_warning: true, idle_stop_at: '2026-12-01T12:04:07Z' }, 'Idle: stops in 4:07 unless you run something'],
    [{ idle_warning: true, idle_stop_at: '2026-12-01T12:25:00Z' }, 'Idle: stops in 25:00 unless you run something'],
    [{ idle_warning: true, idle_stop_at: '2026-12-01T11:59:00Z' }, 'Idle: stops in 0:00 unless you run something'],
    [{ idle_warning: false, idle_stop_at: '2026-12-01T12:04:07Z' }, null],
    [{ idle_warning: true, idle_stop_at: null }, null]
  ])('idle %p', (extra, text) => {
    expect(idleText(session(extra), NOW)).toBe(text);
  });
});

describe('parseRuntimeInfo and the quota bar', () => {
  it.each([null, 'x', {}, { hub: false }, { hub: 'yes' }])('hides the section for %p', body => {
    expect(parseRuntimeInfo(body)).toBeNull();
  });

  it('reads the session and the quota', () => {
    const info = parseRuntimeInfo({
      hub: true,
      user: 'ada',
      server: '',
      current: { runtime_type: 'gpu', runtime_type_label: 'GPU (1× H100)', idle_warning: true, stop_at: 5 },
      quota: { gpu_hours_week_used: 3.5, gpu_hours_week_limit: 10, gpu_hours_week_left: 6.5, week_resets: null },
      note: ''
    });
    expect(info?.current?.runtime_type_label).toBe('GPU (1× H100)');
    expect(info?.current?.idle_warning).toBe(true);
    expect(info?.current?.stop_at).toBeNull();
    expect(quotaText(info!.quota!)).toBe('GPU hours this week: 3.5 of 10 h used, 6.5 h left');
  });

  it.each([
    [{ gpu_hours_week_used: 2, gpu_hours_week_limit: null, gpu_hours_week_left: null, week_resets: null },
      'GPU hours this week: 2 h used, no weekly GPU limit'],
    [{ gpu_hours_week_used: 12.345, gpu_hours_week_limit: 10, gpu_hours_week_left: null, week_resets: null },
      'GPU hours this week: 12.35 of 10 h used, 0 h left']
  ])('quota %p', (quota, text) => {
    expect(quotaText(quota)).toBe(text);
  });

  it('has no quota for a malformed one', () => {
    expect(parseRuntimeInfo({ hub: true, quota: { gpu_hours_week_used: 'x' } })?.quota).toBeNull();
    expect(parseRuntimeInfo({ hub: true, current: 'x' })?.current).toBeNull();
  });
});
