// ESLint flat config. A modest rule set on purpose: the linter has to be clean and stay clean, so every rule
// here either catches real bugs or enforces a convention the project already follows.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Layering: the domain folders import neither the I/O libraries nor the adapters; they depend on src/ports and
// their own store.ts interfaces instead. test/unit/layering.test.ts checks the same rule without ESLint.
const DOMAIN = ['src/prompt/**', 'src/genie/**', 'src/admin/**', 'src/enduser/**'];
const FORBIDDEN_PACKAGES = '(knex|@grpc/grpc-js|pg|ioredis)(/|$)';
const FORBIDDEN_FOLDERS = '(\\.\\./)+(storage|transport|gen)(/|$)';
const LAYERING_MESSAGE = 'The domain does not reach past its ports: depend on an interface in src/ports or the aggregate store.ts.';

/** The layering rules of the domain folders. */
function layering() {
  const specifier = [`^${FORBIDDEN_PACKAGES}`, `^${FORBIDDEN_FOLDERS}`];
  // esquery regex literals cannot hold '/', so the selectors spell it \x2F.
  const inSelector = (re) => `/${re.replaceAll('/', '\\x2F')}/`;
  return {
    'no-restricted-imports': ['error', { patterns: specifier.map((regex) => ({ regex, caseSensitive: true, message: LAYERING_MESSAGE })) }],
    'no-restricted-syntax': [
      'error',
      ...specifier.flatMap((re) => [
        { selector: `ImportExpression > Literal.source[value=${inSelector(re)}]`, message: LAYERING_MESSAGE },
        { selector: `TSImportType > Literal.source[value=${inSelector(re)}]`, message: LAYERING_MESSAGE },
      ]),
    ],
  };
}

export default tseslint.config(
  { ignores: ['src/gen/**', 'dist/**', 'proto-vendor/**', 'proto-baseline/**', 'node_modules/**', 'bench/results/**'] },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: {
      // Type information for the few rules below that need it (a forgotten await is a real bug here).
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      eqeqeq: ['error', 'smart'],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
    },
  },
  {
    // Tests may type ava's context, fixtures and decoded JSON loosely.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  { files: DOMAIN, rules: layering() },
);
