#!/usr/bin/env bash
# The whole test suite: set-up, type check, lint, then unit tests (no root) and root tests that
# build throwaway namespaces (integration: the plugin; e2e: the lab). Test files are listed
# explicitly (globs expanded here), because `node --test` on Node 20 finds no .ts files by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== typecheck" && npx tsc -p .
echo "== lint" && npx eslint .
shopt -s nullglob
files=(test/unit/*.test.ts)
if [ "$(id -u)" = 0 ]; then
  files+=(test/integration/*.test.ts test/e2e/*.test.ts)
else
  echo "not root: running only the unit tests" >&2
fi
[ -n "${FLATNET_TEST_FILTER:-}" ] && files=($(printf '%s\n' "${files[@]}" | grep -E "$FLATNET_TEST_FILTER"))
echo "== tests (${#files[@]} files)"
exec node --import tsx --test --test-concurrency=1 --test-reporter=tap "${files[@]}"
