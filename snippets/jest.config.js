// Unit tests of the pure logic (search, cells, grouping, the API client): ts-jest,
// no browser. The widgets and the plugin are tested in a real browser instead
// (tests/test_browser_snippets.py in the kernelhub repository).
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  moduleFileExtensions: ['ts', 'js', 'json']
};
