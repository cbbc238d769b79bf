#!/usr/bin/env bash
# run-tests.sh — runs each test binary given, prints cmocka's output, and a one-line summary.
# Exits non-zero if any suite fails. Suites find ../shared relative to the repository root.
set -u
cd "$(dirname "$0")/.." || exit 2
failed=()
for t in "$@"; do
    [ -x "$t" ] || continue
    echo "=== $t"
    if ! "$t"; then
        failed+=("$t")
    fi
done
echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "ALL TEST SUITES PASSED ($# suites)"
else
    echo "FAILED SUITES (${#failed[@]} of $#): ${failed[*]}"
    exit 1
fi
