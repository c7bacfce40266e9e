import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'scripts/**', 'eslint.config.mjs'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', name: ['test', 'describe', 'it', 'suite'], package: 'node:test' }] }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/bin/*'], message: 'bin/ is an entry point only' }] }],
    },
  },
  {
    // Pure layers must not reach the kernel, the stores or the process edge.
    files: ['src/net/**', 'src/cni/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['**/linux/*', '**/store/*', '**/bin/*', 'node:child_process'], message: 'pure code: no side effects here' },
      ] }],
    },
  },
);
