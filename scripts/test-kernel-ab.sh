#!/usr/bin/env bash
# test-kernel-ab.sh — keeps scripts/kernel-ab.sh (the kernels' A/B timing) working: builds it with
# HEAD's kernels on both sides, AVX2 (which every x86 machine CI runs on has), runs a small
# product at 1 and 16 tokens for 3 rounds, and asks for bitwise equal outputs and both rates; and
# that a bad instruction set or revision is refused with exit status 2 and the reason.
# A few seconds after the two compiles (~15 s on 2 cores). Skipped, saying so, off x86-64, on a
# CPU without AVX2, or outside a git checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ] || ! grep -qw avx2 /proc/cpuinfo || ! git rev-parse HEAD > /dev/null 2>&1; then
    echo "test-kernel-ab: SKIPPED (needs x86-64 with AVX2 and a git checkout)"
    exit 0
fi
out=$(scripts/kernel-ab.sh -b HEAD -t HEAD -i avx2 -r 3 32 64 Q4_1 1 16)
echo "$out"
if [ "$(grep -c 'GMAC/s (medians of 3 rounds).*outputs bitwise equal$' <<< "$out")" != 2 ]; then
    echo "test-kernel-ab: FAILED (expected two lines of rates with bitwise equal outputs)"
    exit 1
fi
# bad arguments: exit 2 with the reason
set +e
err=$(scripts/kernel-ab.sh -i sse2 2>&1); rc=$?
err2=$(scripts/kernel-ab.sh -b no-such-rev 2>&1); rc2=$?
set -e
if [ $rc != 2 ] || [[ $err != *"-i takes amx, avx512 or avx2, not 'sse2'"* ]] ||
    [ $rc2 != 2 ] || [[ $err2 != *"'no-such-rev' is neither a file nor a revision with engine/cpu/kernels_x86.h"* ]]; then
    echo "test-kernel-ab: FAILED (bad arguments: rc $rc '$err'; rc $rc2 '$err2')"
    exit 1
fi
echo "test-kernel-ab: PASSED"
