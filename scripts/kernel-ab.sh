#!/usr/bin/env bash
# kernel-ab.sh — is a change to the x86 kernels (engine/cpu/kernels_x86.h) faster? Builds the
# header of a base revision and the working tree's (or a test revision's) into one program
# (tests/bench/kernel_ab/) and times one matrix product with each in alternating turns of about a
# millisecond, so both see the same phase of a noisy shared machine; prints the median test/base
# time ratio per token count.
#
#   scripts/kernel-ab.sh [-b REV|FILE] [-t REV|FILE] [-i amx|avx512|avx2] [-r ROUNDS]
#                        [ROWS K TYPE [TOKENS...]]
#   A FILE is a copy of the header. Defaults: -b HEAD, test the working tree, -i amx, -r 201;
#   1536 576 Q4_1 (SmolLM2's FFN gate / up), tokens 1 16.
#   e.g.  scripts/kernel-ab.sh -b HEAD~1 576 1536 Q4_1 1 4 16
#
# Both headers compile against the working tree's engine/cpu/kernels.h, so the two revisions must
# agree on it. Needs an unsanitised built tree (make: build/libengine.a, build/libsched.a; BUILD=
# names another). Exit status 2 on bad arguments; `make test` runs it on a small product with both
# sides HEAD and asks for bitwise equal outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=HEAD test_rev= isa=amx rounds=201
while getopts "b:t:i:r:" o; do
    case $o in
    b) rev=$OPTARG ;;
    t) test_rev=$OPTARG ;;
    i) isa=$OPTARG ;;
    r) rounds=$OPTARG ;;
    *) sed -n '7,11p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
case $isa in
amx) isa_id=3 ;; avx512) isa_id=2 ;; avx2) isa_id=1 ;;
*) echo "kernel-ab.sh: -i takes amx, avx512 or avx2, not '$isa'" >&2; exit 2 ;;
esac
rows=${1:-1536} k=${2:-576} type=${3:-Q4_1}
shift $(($# < 3 ? $# : 3))
tokens=("$@")
[ ${#tokens[@]} -gt 0 ] || tokens=(1 16)
build=${BUILD:-build}
for lib in "$build/libengine.a" "$build/libsched.a"; do
    [ -f "$lib" ] || { echo "kernel-ab.sh: $lib is missing: run make first" >&2; exit 2; }
done
out=$build/kernel-ab
mkdir -p "$out"
# header_of REV|FILE DEST: a revision's kernels_x86.h, or a header file
header_of() {
    if [ -f "$1" ]; then
        cp "$1" "$2"
    elif ! git show "$1:engine/cpu/kernels_x86.h" > "$2"; then
        echo "kernel-ab.sh: '$1' is neither a file nor a revision with engine/cpu/kernels_x86.h" >&2
        exit 2
    fi
}
header_of "$rev" "$out/base.h"
header_of "${test_rev:-engine/cpu/kernels_x86.h}" "$out/test.h"
flags=(-std=c11 -D_GNU_SOURCE -O2 -pthread -fno-strict-aliasing -ffp-contract=off -I. "-DKERNEL_AB_ISA=$isa_id")
${CC:-cc} "${flags[@]}" "-DKERNEL_AB_HEADER=\"$out/base.h\"" -DKERNEL_AB_TABLE=kernel_ab_base \
    -c tests/bench/kernel_ab/table.c -o "$out/base.o" &
${CC:-cc} "${flags[@]}" "-DKERNEL_AB_HEADER=\"$out/test.h\"" -DKERNEL_AB_TABLE=kernel_ab_test \
    -c tests/bench/kernel_ab/table.c -o "$out/test.o" &
wait %1 && wait %2
${CC:-cc} "${flags[@]}" -o "$out/driver" tests/bench/kernel_ab/driver.c "$out/base.o" "$out/test.o" \
    "$build/libengine.a" "$build/libsched.a" -lm -lpthread
echo "kernel-ab: base $rev, test ${test_rev:-the working tree}; $isa kernels, one thread"
for n in "${tokens[@]}"; do
    "$out/driver" "$rows" "$k" "$type" "$n" "$rounds"
done
