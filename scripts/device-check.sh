#!/usr/bin/env bash
# device-check.sh OUTDIR — the CUDA backend on a GPU machine: build, unit tests, CPU-vs-CUDA check
# on real GGUFs, the Llama-2-7B-shape benchmark; then the CPU backend on this host's instruction set
# (its kernel tests, bench_cpu as info) and the simulator against the engine; writes
# OUTDIR/results.csv and OUTDIR/*.log and prints a summary table LAST (target vs measured,
# PASS/FAIL). Every step is bounded by `timeout`; without the validation it stays under 8 minutes.
#
# Builds without the Makefile (the GPU machine may lack gsl/sqlite/cjson/microhttpd, which the
# engine does not need): sched/ + engine/ + engine/cpu/ + engine/cuda/ into build-dev/, sm_90 only.
# The cmocka suites build against cmocka from .devdebs (unpacked first, see below), else the
# system's; with neither they are not built and the run says so.
# Models (../shared does not exist on the GPU machine; copy them into a carried folder):
#   SLUICE_STORIES  default .devdata/stories260K.gguf, else ../shared/models/stories260K.gguf
#   SLUICE_SMOLLM2  default .devdata/SmolLM2-135M-Instruct.Q4_1.gguf, else models/...
# The full `sluice` (profile, validate: the simulator against the engine on CUDA, which replays a
# trace through the serving loop) needs gsl, sqlite3, cJSON and libmicrohttpd: scripts/device-deps.sh
# puts Debian's packages into .devdebs/ (carry it); they are unpacked once, at the start, into
# /tmp/devroot, never into / (dpkg -x, or ar + tar where dpkg is missing), and serve the cmocka
# suites too. Without them that part is skipped and says so.
# SLUICE_DEVICE_PARTS picks the parts (default all three; a run of everything can pass one device
# call's 10-minute limit, so split it in two calls on the same warm machine):
#   gpu       build, the CUDA cmocka suites, CPU vs CUDA, the Llama-2-7B benchmark (~80 s on an H100);
#             with .devdebs it also builds the full sluice for the validation in the background
#   host      the CPU kernels on this host's ISA (their suites; bench_cpu as info)
#   validate  profile + validate on CUDA (~3 minutes; SLUICE_VALIDATE_RATES, default "4 14" req/s)
# Exit status: 0 all PASS, 1 a target or check failed, 2 the build failed.
set -u
cd "$(dirname "$0")/.." || exit 2
OUT=${1:?usage: scripts/device-check.sh OUTDIR}
mkdir -p "$OUT"
CSV="$OUT/results.csv"
echo "name,measured,unit,target,cmp,result" >"$CSV"
B=build-dev
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
CUDA_ARCHS=${CUDA_ARCHS:--gencode arch=compute_90,code=sm_90}
CFLAGS="-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter -pthread -fno-strict-aliasing -ffp-contract=off -I. -DSLUICE_HAVE_CUDA=1 -I$CUDA_HOME/include"
LIBS="-L$CUDA_HOME/lib64 -Wl,-rpath,$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lstdc++ -lm -lpthread -ldl"
pick() { for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
STORIES=${SLUICE_STORIES:-$(pick .devdata/stories260K.gguf ../shared/models/stories260K.gguf)}
# The SmolLM2 file (98 MB) is over the device tool's 64 MiB carry limit; without it the check runs
# on a synthetic model of the same shape and types (Q4_1 projections), which exercises the same
# dequantisation and kernels but not the real weights.
SMOLLM2=${SLUICE_SMOLLM2:-$(pick .devdata/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_1.gguf)}
[ -f "$SMOLLM2" ] || SMOLLM2=synthetic:smollm2-135m:q4_1
DEVROOT=/tmp/devroot # .devdebs unpacked here; never /
DEVLIB=$DEVROOT/usr/lib/x86_64-linux-gnu
status=0
step() { echo; echo "=== [${SECONDS}s] $*"; }
fail_row() { echo "$1,,,,,FAIL" >>"$CSV"; status=1; }
# unit NAME BIN [DIR]: runs a cmocka suite (in DIR, default here; 120 s or $UNIT_TIMEOUT) and writes
# row NAME: measured = passed/run, PASS (with "N skipped" when some skipped) or FAIL.
unit() {
    local name=$1 bin=$2 dir=${3:-.} log rc n_run n_pass n_skip
    log="$OUT/$(basename "$bin").log"
    (cd "$dir" && timeout "${UNIT_TIMEOUT:-120}" "$bin") >"$log" 2>&1
    rc=$?
    read -r n_run n_pass n_skip < <(awk '/^\[==========\] [0-9]+ test\(s\) run/ { r += $2 } /^\[  PASSED  \] [0-9]+ test/ { p += $4 }
                  /^\[  SKIPPED \] [0-9]+ test/ { s += $4 } END { printf "%d %d %d\n", r, p, s }' "$log")
    if [ $rc = 0 ]; then
        echo "$name,$n_pass/$n_run,tests,,info,PASS$([ "$n_skip" != 0 ] && echo " ($n_skip skipped)")" >>"$CSV"
        grep -E "^SKIPPED|^\[  (PASSED|SKIPPED) +\] [0-9]+ test" "$log" | sort | uniq -c
    else
        tail -20 "$log"
        [ $rc = 124 ] && echo "(timed out)"
        fail_row "$name"
    fi
}
# unpack_deb DEB DIR: a package's files under DIR (dpkg -x; ar + tar where dpkg is missing)
unpack_deb() {
    if command -v dpkg >/dev/null 2>&1; then dpkg -x "$1" "$2"; return; fi
    local t deb rc
    deb=$(realpath "$1") && t=$(mktemp -d) || return 1
    (cd "$t" && ar x "$deb") && tar -xf "$t"/data.tar.* -C "$2"
    rc=$?
    rm -rf "$t"
    return $rc
}

step "device"
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/device.log"
"$NVCC" --version | tail -1

step "dependencies: .devdebs into $DEVROOT, cmocka"
have_devroot=0
if ls .devdebs/*.deb >/dev/null 2>&1; then
    have_devroot=1
    mkdir -p "$DEVROOT" || have_devroot=0
    for f in .devdebs/*.deb; do
        [ $have_devroot = 1 ] || break
        unpack_deb "$f" "$DEVROOT" || { echo "cannot unpack $f"; have_devroot=0; }
    done
    [ $have_devroot = 1 ] && echo "unpacked $(ls .devdebs/*.deb | wc -l) packages into $DEVROOT"
else
    echo "no .devdebs/ (scripts/device-deps.sh fetches them; carry .devdebs): the system's libraries only"
fi
if [ $have_devroot = 1 ] && [ -f $DEVROOT/usr/include/cmocka.h ] && [ -e $DEVLIB/libcmocka.so ]; then
    CMOCKA_FROM=$DEVROOT CMOCKA_CFLAGS="-I$DEVROOT/usr/include" CMOCKA_LIBS="-L$DEVLIB -Wl,-rpath,$DEVLIB -lcmocka"
elif [ -f /usr/include/cmocka.h ]; then
    CMOCKA_FROM="the system" CMOCKA_CFLAGS='' CMOCKA_LIBS=-lcmocka
else
    CMOCKA_FROM='' CMOCKA_CFLAGS='' CMOCKA_LIBS=''
fi
echo "cmocka: ${CMOCKA_FROM:-none (neither .devdebs nor /usr/include/cmocka.h): the unit tests will not be built}"

PARTS=" ${SLUICE_DEVICE_PARTS:-gpu host validate} "
part() { case "$PARTS" in *" $1 "*) return 0 ;; esac; return 1; }

# The full sluice (profile, validate) against the unpacked .devdebs, into build-devfull/.
build_full() {
    timeout 300 make BUILD=build-devfull CUDA=1 NVCC="$NVCC" CUDA_HOME="$CUDA_HOME" CUDA_ARCHS="$CUDA_ARCHS" \
        CFLAGS="-I$DEVROOT/usr/include -I$DEVROOT/usr/include/cjson" LDFLAGS="-L$DEVLIB -Wl,-rpath,$DEVLIB" -j16 \
        build-devfull/sluice >"$OUT/build_full.log" 2>&1
}
full_pid=

build() {
    mkdir -p "$B/o" || return 1
    local srcs obj
    srcs=$(ls sched/*.c engine/*.c engine/cpu/*.c engine/cuda/*.c)
    printf '%s\n' $srcs | xargs -P 16 -I{} sh -c 'o='"$B"'/o/$(echo {} | tr / _).o; cc '"$CFLAGS"' -c {} -o $o' || return 1
    for f in engine/cuda/*.cu; do
        obj=$B/o/$(echo "$f" | tr / _).o
        "$NVCC" -O3 -std=c++17 -I. -lineinfo $CUDA_ARCHS -Xcompiler -fPIC -c "$f" -o "$obj" &
    done
    wait || return 1
    for f in engine/cuda/*.cu; do [ -f "$B/o/$(echo "$f" | tr / _).o" ] || return 1; done
    rm -f $B/libdev.a && ar rcs $B/libdev.a $B/o/*.o || return 1
    cc $CFLAGS -o $B/bench_cuda tests/bench/bench_cuda.c $B/libdev.a $LIBS || return 1
}
# build_test SRC: a cmocka suite into $B/ (its log in OUTDIR); 1 when it does not build
build_test() {
    local n
    n=$(basename "$1" .c)
    rm -f "$B/$n"
    timeout 120 cc $CFLAGS -Itests $CMOCKA_CFLAGS -o "$B/$n" "$1" $B/libdev.a $CMOCKA_LIBS $LIBS >"$OUT/build_$n.log" 2>&1 && return
    tail -20 "$OUT/build_$n.log"
    return 1
}
export B CFLAGS LIBS NVCC CUDA_ARCHS
# build_dev: build-dev/ (libdev.a + bench_cuda); exits 2 when it fails
build_dev() {
    step "build ($B, $CUDA_ARCHS)"
    if ! timeout 300 bash -c "$(declare -f build); build" >"$OUT/build.log" 2>&1; then
        tail -30 "$OUT/build.log"
        echo "BUILD FAILED (log: $OUT/build.log)"
        echo "build,,,,,FAIL" >>"$CSV"
        exit 2
    fi
    echo "built"
}

gpu_part() {
build_dev
if [ $have_devroot = 1 ]; then # ready for the validate part, which may come in a later call
    (renice -n 10 $BASHPID >/dev/null; build_full) &
    full_pid=$!
    echo "building the full sluice for the validation in the background (build_full.log)"
fi

step "unit tests (CUDA; cmocka: ${CMOCKA_FROM:-none})"
if [ -n "$CMOCKA_FROM" ]; then
    for t in tests/engine/test_cuda_*.c; do
        n=$(basename "$t" .c)
        if build_test "$t"; then unit "unit $n" "$B/$n"; else fail_row "unit $n (build)"; fi
    done
else
    echo "no cmocka on this machine (no .devdebs, no /usr/include/cmocka.h): unit tests not built (bench check below covers the backend)"
fi

step "CPU vs CUDA: $STORIES"
timeout 120 $B/bench_cuda check "$STORIES" "$CSV" 2>&1 | tee "$OUT/check_stories.log"
[ "${PIPESTATUS[0]}" = 0 ] || { grep -q "check stories" "$CSV" || fail_row "check stories260K"; status=1; }

step "CPU vs CUDA: $SMOLLM2"
echo "(quantised weights: the reference is the CPU on the weights dequantised to F32; the CPU on the"
echo " quantised weights, which quantises activations to 8 bits, is info. Synthetic weights: flat"
echo " logits, so greedy flips within noise are info and only flips beyond noise fail.)"
timeout 180 $B/bench_cuda check "$SMOLLM2" "$CSV" 2>&1 | tee "$OUT/check_smollm2.log"
[ "${PIPESTATUS[0]}" = 0 ] || { grep -qi "check .*smollm2" "$CSV" || fail_row "check SmolLM2"; status=1; }

step "CPU vs CUDA: synthetic:smollm2-135m:f16 (the SmolLM2 shape, F16 weights both sides hold as is)"
timeout 120 $B/bench_cuda check synthetic:smollm2-135m:f16 "$CSV" 2>&1 | tee "$OUT/check_smollm2_f16.log"
[ "${PIPESTATUS[0]}" = 0 ] || { grep -q "check synthetic:smollm2-135m:f16" "$CSV" || fail_row "check smollm2 f16"; status=1; }

step "benchmark: synthetic llama2-7b fp16 (weights generated on the device; SLUICE_CUDA_GEMV=${SLUICE_CUDA_GEMV:-auto} SLUICE_CUDA_PREFILL_ATTN=${SLUICE_CUDA_PREFILL_ATTN:-fa2} SLUICE_CUDA_ELTWISE=${SLUICE_CUDA_ELTWISE:-vec} SLUICE_CUDA_FUSE=${SLUICE_CUDA_FUSE:-on} SLUICE_CUDA_DECODE_ATTN=${SLUICE_CUDA_DECODE_ATTN:-single} SLUICE_CUDA_SAMPLE=${SLUICE_CUDA_SAMPLE:-device} SLUICE_CUDA_PDL=${SLUICE_CUDA_PDL:-on})"
echo "(first: prefill through the old attention kernel and the scalar elementwise kernels vs the"
echo " default paths, split-K vs one-pass decode attention, logits within 5e-3; fused vs unfused"
echo " GEMVs within 1e-6; a FAIL there names the path to bypass with its variable)"
timeout 300 $B/bench_cuda perf llama2-7b "$CSV" 2>&1 | tee "$OUT/perf.log"
[ "${PIPESTATUS[0]}" = 0 ] || { grep -q "^decode b256" "$CSV" || fail_row "perf incomplete (see perf.log)"; status=1; }
}

host_part() {
[ -f $B/libdev.a ] || build_dev
step "CPU kernels on this host's ISA"
# test_cpu_kernels checks every ISA this CPU runs (scalar, avx2, avx512, amx) against a scalar reference;
# test_cpu_backend and test_forward run the backend on the ISA it dispatches to. All three link
# against the engine alone (no gsl/sqlite). test_forward reads ../shared/models/stories260K.gguf and
# ../shared/fixtures/ relative to its working directory and skips (saying SKIPPED) without the
# model, fails without the fixtures: it runs in a scratch directory whose ../shared links to
# $STORIES and to .devdata/fixtures/ (or ../shared/fixtures/); without both it is not run and gets a
# SKIPPED info row. 20 s per suite (each takes under a second on a 2-core Zen 1).
grep -m1 "^model name" /proc/cpuinfo
cpu_flags=$(grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' |
    grep -xE "avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512vnni|avx_vnni|amx_int8" | tr '\n' ' ')
echo "SIMD flags: ${cpu_flags:-none of avx2/fma/f16c/avx512*}"
isa=unknown
printf '#include <stdio.h>\n#include "engine/cpu/kernels.h"\nint main(void) { puts(eng_cpu_kernels_get(eng_cpu_isa_detect())->name); return 0; }\n' >$B/cpu_isa.c
if cc $CFLAGS -o $B/cpu_isa $B/cpu_isa.c $B/libdev.a $LIBS >"$OUT/build_cpu_isa.log" 2>&1 && isa=$(timeout 10 $B/cpu_isa); then
    echo "the CPU kernels dispatch to: $isa (eng_cpu_isa_detect: avx512 needs avx512f/bw/vl + vnni; amx also amx_tile + amx_int8)"
    echo "cpu isa dispatched,$isa,,,info,info" >>"$CSV"
else
    tail -5 "$OUT/build_cpu_isa.log"
    fail_row "cpu isa probe"
fi
if [ -z "$CMOCKA_FROM" ]; then
    echo "no cmocka on this machine: CPU kernel tests not built"
else
    for n in test_cpu_kernels test_cpu_backend; do
        if build_test tests/engine/$n.c; then UNIT_TIMEOUT=20 unit "cpu unit $n ($isa)" "$PWD/$B/$n"; else fail_row "cpu unit $n ($isa) (build)"; fi
    done
    fix=$(dirname "$(pick .devdata/fixtures/stories260K_greedy.txt ../shared/fixtures/stories260K_greedy.txt)")
    if [ -f "$STORIES" ] && [ -f "$fix/stories260K_greedy.txt" ] && [ -f "$fix/stories260K_ppl_text.txt" ]; then
        fwd=$(mktemp -d /tmp/sluice-fwd.XXXXXX) && mkdir -p "$fwd/run" "$fwd/shared/models" &&
            ln -s "$(realpath "$STORIES")" "$fwd/shared/models/stories260K.gguf" &&
            ln -s "$(realpath "$fix")" "$fwd/shared/fixtures"
        if build_test tests/engine/test_forward.c; then
            UNIT_TIMEOUT=20 unit "cpu unit test_forward ($isa)" "$PWD/$B/test_forward" "$fwd/run"
        else
            fail_row "cpu unit test_forward ($isa) (build)"
        fi
        rm -rf "$fwd"
    else
        echo "SKIPPED: test_forward needs $STORIES and the llama.cpp fixtures (.devdata/fixtures/ or ../shared/fixtures/)"
        echo "cpu unit test_forward ($isa),,,,info,SKIPPED (no fixtures)" >>"$CSV"
    fi
fi

step "CPU benchmark on this host: bench_cpu $SMOLLM2, 2 threads (info)"
echo "(one stream vs 16 streams decoding together; the target, 16 streams >= 4x one stream on 2"
echo " threads, is judged on the development machine: info here)"
if cc $CFLAGS -o $B/bench_cpu tests/bench/bench_cpu.c $B/libdev.a $LIBS >"$OUT/build_bench_cpu.log" 2>&1; then
    timeout 90 $B/bench_cpu "$SMOLLM2" -t 2 -b 16 -p 64 -n 32 -r 3 2>&1 | tee "$OUT/bench_cpu.log"
    rc=${PIPESTATUS[0]}
    # sluice cpu (ISA, 2 threads, KV f32|f16|int8): pp64 X t/s  tg32 Y t/s  (median of 3; ...)
    # sluice cpu batched decode: 16 sequences x 32 steps: Z t/s in all (range ...), R.RRx one stream's tg32
    b_isa=$(sed -n 's/^sluice cpu (\([a-z0-9]*\),.*/\1/p' "$OUT/bench_cpu.log")
    b_pp=$(sed -n 's/^sluice cpu (.*: pp64 \([0-9.]*\) t\/s .*/\1/p' "$OUT/bench_cpu.log")
    b_tg=$(sed -n 's/^sluice cpu (.* tg32 \([0-9.]*\) t\/s .*/\1/p' "$OUT/bench_cpu.log")
    b_bd=$(sed -n 's/^sluice cpu batched decode: .*: \([0-9.]*\) t\/s in all.*/\1/p' "$OUT/bench_cpu.log")
    b_x=$(sed -n 's/^sluice cpu batched decode: .*, \([0-9.]*\)x one stream.*/\1/p' "$OUT/bench_cpu.log")
    if [ "$rc" = 0 ] && [ -n "$b_tg" ] && [ -n "$b_bd" ] && [ -n "$b_x" ]; then
        {
            echo "cpu bench pp64 ($b_isa t2),$b_pp,tok/s,,info,info"
            echo "cpu bench tg32 1 stream ($b_isa t2),$b_tg,tok/s,,info,info"
            echo "cpu bench tg32 16 streams ($b_isa t2),$b_bd,tok/s,,info,info"
            echo "cpu bench 16 streams / 1 (dev: >= 4),$b_x,x,4,info,info"
        } >>"$CSV"
    elif [ "$rc" = 124 ]; then
        echo "cpu bench (timed out after 90 s),,,,info,MISS" >>"$CSV"
    else
        fail_row "cpu bench (exit $rc or output not parsed; see bench_cpu.log)"
    fi
else
    tail -20 "$OUT/build_bench_cpu.log"
    fail_row "cpu bench (build)"
fi
}

validate_cuda() {
    local S=build-devfull/sluice db="$OUT/device.db"
    [ $have_devroot = 1 ] || { echo ".devdebs were not unpacked (see the dependencies step)"; echo "validate deps,,,,,FAIL" >>"$CSV"; return 1; }
    if [ -n "$full_pid" ]; then wait "$full_pid"; full_pid=; fi
    # libgsl needs libgslcblas: the binary's runpath does not reach a library's own dependencies
    export LD_LIBRARY_PATH=$DEVLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    build_full || { tail -20 "$OUT/build_full.log"; echo "validate build,,,,,FAIL" >>"$CSV"; return 1; }
    timeout 150 $S profile -m synthetic:llama2-7b --backend cuda --budget 60 --db "$db" 2>&1 | tee "$OUT/profile_cuda.log"
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "profile cuda,,,,,FAIL" >>"$CSV"; return 1; }
    local rate rc
    # moderate, near saturation (b64 decode ~5,000 tok/s, sharegpt ~200 output tokens)
    for rate in ${SLUICE_VALIDATE_RATES:-4 14}; do
        timeout 200 $S validate -m synthetic:llama2-7b --backend cuda --preset sharegpt -n 150 --rate $rate \
            --repeat 2 --db "$db" 2>&1 | tee "$OUT/validate_cuda_rate$rate.log"
        rc=${PIPESTATUS[0]}
        echo "validate cuda sharegpt rate $rate (exit 0: all within 5%),$rc,exit,0,info,$([ "$rc" = 0 ] && echo PASS || echo MISS)" >>"$CSV"
    done
}
echo "parts:$PARTS(SLUICE_DEVICE_PARTS)"
part gpu && gpu_part
part host && host_part
if part validate; then
    step "simulator vs engine on CUDA: profile + validate, synthetic llama2-7b fp16"
    if ! ls .devdebs/*.deb >/dev/null 2>&1; then
        echo "SKIPPED: no .devdebs/ (run scripts/device-deps.sh here and carry .devdebs)"
    else
        validate_cuda || status=1
    fi
fi
if [ -n "$full_pid" ]; then # the background build must end inside this call
    wait "$full_pid" && echo "full sluice built (build-devfull/)" || echo "full sluice build failed or timed out (build_full.log)"
fi

step "SUMMARY ($CSV)"
awk -F, 'NR > 1 { tgt = ($5 == "info" || $5 == "") ? "-" : $5 " " $4;
                  printf "%-40s %14s %-6s %-14s %s\n", $1, $2, $3, tgt, $6 }
         BEGIN { printf "%-40s %14s %-6s %-14s %s\n", "what", "measured", "unit", "target", "result" }' "$CSV"
grep -q ",FAIL$" "$CSV" && status=1
[ "$(wc -l <"$CSV")" -gt 1 ] || { echo "NOTHING WAS CHECKED"; exit 1; }
[ $status = 0 ] && echo "ALL PASS" || echo "SOME CHECKS FAILED"
exit $status
