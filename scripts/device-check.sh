#!/usr/bin/env bash
# device-check.sh OUTDIR — the CUDA backend on a GPU machine: build, unit tests, CPU-vs-CUDA check
# on real GGUFs, the Llama-2-7B-shape benchmark; writes OUTDIR/results.csv and OUTDIR/*.log and
# prints a summary table LAST (target vs measured, PASS/FAIL). Every step is bounded by `timeout`;
# the whole run stays under 8 minutes.
#
# Builds without the Makefile (the GPU machine may lack gsl/sqlite/cjson/microhttpd, which the
# engine does not need): sched/ + engine/ + engine/cpu/ + engine/cuda/ into build-dev/, sm_90 only.
# Models (../shared does not exist on the GPU machine; copy them into a carried folder):
#   SLUICE_STORIES  default .devdata/stories260K.gguf, else ../shared/models/stories260K.gguf
#   SLUICE_SMOLLM2  default .devdata/SmolLM2-135M-Instruct.Q4_1.gguf, else models/...
# The full `sluice` (profile, validate: the simulator against the engine on CUDA, which replays a
# trace through the serving loop) needs gsl, sqlite3, cJSON and libmicrohttpd: scripts/device-deps.sh
# puts Debian's packages into .devdebs/ (carry it); they are unpacked into /tmp/devroot, never into /.
# Without them that part is skipped and says so. SLUICE_DEVICE_VALIDATE=0 skips it too.
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
CFLAGS="-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter -pthread -fno-strict-aliasing -I. -DSLUICE_HAVE_CUDA=1 -I$CUDA_HOME/include"
LIBS="-L$CUDA_HOME/lib64 -Wl,-rpath,$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lstdc++ -lm -lpthread -ldl"
pick() { for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
STORIES=${SLUICE_STORIES:-$(pick .devdata/stories260K.gguf ../shared/models/stories260K.gguf)}
# The SmolLM2 file (98 MB) is over the device tool's 64 MiB carry limit; without it the check runs
# on a synthetic model of the same shape and types (Q4_1 projections), which exercises the same
# dequantisation and kernels but not the real weights.
SMOLLM2=${SLUICE_SMOLLM2:-$(pick .devdata/SmolLM2-135M-Instruct.Q4_1.gguf models/SmolLM2-135M-Instruct.Q4_1.gguf)}
[ -f "$SMOLLM2" ] || SMOLLM2=synthetic:smollm2-135m:q4_1
status=0
step() { echo; echo "=== $*"; }
fail_row() { echo "$1,,,,,FAIL" >>"$CSV"; status=1; }

step "device"
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/device.log"
"$NVCC" --version | tail -1

step "build ($B, $CUDA_ARCHS)"
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
    if [ -f /usr/include/cmocka.h ]; then
        for t in tests/engine/test_cuda_*.c; do
            cc $CFLAGS -Itests -o "$B/$(basename "$t" .c)" "$t" $B/libdev.a -lcmocka $LIBS || return 1
        done
    fi
}
export B CFLAGS LIBS NVCC CUDA_ARCHS
if ! timeout 300 bash -c "$(declare -f build); build" >"$OUT/build.log" 2>&1; then
    tail -30 "$OUT/build.log"
    echo "BUILD FAILED (log: $OUT/build.log)"
    echo "build,,,,,FAIL" >>"$CSV"
    exit 2
fi
echo "built"

step "unit tests"
if ls $B/test_cuda_* >/dev/null 2>&1; then
    for t in $B/test_cuda_*; do
        if timeout 120 "$t" >"$OUT/$(basename "$t").log" 2>&1; then
            echo "unit $(basename "$t"),1,,1,info,PASS" >>"$CSV"
            grep -E "OK|SKIPPED|PASSED" "$OUT/$(basename "$t").log" | tail -4
        else
            tail -20 "$OUT/$(basename "$t").log"
            fail_row "unit $(basename "$t")"
        fi
    done
else
    echo "no cmocka on this machine: unit tests not built (bench check below covers the backend)"
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

step "benchmark: synthetic llama2-7b fp16 (weights generated on the device; SLUICE_CUDA_GEMV=${SLUICE_CUDA_GEMV:-auto} SLUICE_CUDA_PREFILL_ATTN=${SLUICE_CUDA_PREFILL_ATTN:-fa2} SLUICE_CUDA_ELTWISE=${SLUICE_CUDA_ELTWISE:-vec} SLUICE_CUDA_FUSE=${SLUICE_CUDA_FUSE:-on} SLUICE_CUDA_DECODE_ATTN=${SLUICE_CUDA_DECODE_ATTN:-single} SLUICE_CUDA_SAMPLE=${SLUICE_CUDA_SAMPLE:-device})"
echo "(first: prefill through the old attention kernel and the scalar elementwise kernels vs the"
echo " default paths, split-K vs one-pass decode attention, logits within 5e-3; fused vs unfused"
echo " GEMVs within 1e-6; a FAIL there names the path to bypass with its variable)"
timeout 300 $B/bench_cuda perf llama2-7b "$CSV" 2>&1 | tee "$OUT/perf.log"
[ "${PIPESTATUS[0]}" = 0 ] || { grep -q "^decode b256" "$CSV" || fail_row "perf incomplete (see perf.log)"; status=1; }

step "simulator vs engine on CUDA: profile + validate, synthetic llama2-7b fp16"
validate_cuda() {
    local root=/tmp/devroot lib=/tmp/devroot/usr/lib/x86_64-linux-gnu S=build-devfull/sluice db="$OUT/device.db"
    mkdir -p $root && for f in .devdebs/*.deb; do dpkg -x "$f" $root || return 1; done
    timeout 300 make BUILD=build-devfull CUDA=1 NVCC="$NVCC" CUDA_HOME="$CUDA_HOME" CUDA_ARCHS="$CUDA_ARCHS" \
        CFLAGS="-I$root/usr/include -I$root/usr/include/cjson" LDFLAGS="-L$lib -Wl,-rpath,$lib" -j16 $S \
        >"$OUT/build_full.log" 2>&1 || { tail -20 "$OUT/build_full.log"; echo "validate build,,,,,FAIL" >>"$CSV"; return 1; }
    timeout 150 $S profile -m synthetic:llama2-7b --backend cuda --budget 60 --db "$db" 2>&1 | tee "$OUT/profile_cuda.log"
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "profile cuda,,,,,FAIL" >>"$CSV"; return 1; }
    local rate rc
    for rate in 4 14; do # moderate, near saturation (b64 decode ~5,000 tok/s, sharegpt ~200 output tokens)
        timeout 200 $S validate -m synthetic:llama2-7b --backend cuda --preset sharegpt -n 150 --rate $rate \
            --repeat 2 --db "$db" 2>&1 | tee "$OUT/validate_cuda_rate$rate.log"
        rc=${PIPESTATUS[0]}
        echo "validate cuda sharegpt rate $rate (exit 0: all within 5%),$rc,exit,0,info,$([ "$rc" = 0 ] && echo PASS || echo MISS)" >>"$CSV"
    done
}
if [ "${SLUICE_DEVICE_VALIDATE:-1}" = 0 ]; then
    echo "skipped (SLUICE_DEVICE_VALIDATE=0)"
elif ! ls .devdebs/*.deb >/dev/null 2>&1; then
    echo "SKIPPED: no .devdebs/ (run scripts/device-deps.sh here and carry .devdebs)"
else
    validate_cuda || status=1
fi

step "SUMMARY ($CSV)"
awk -F, 'NR > 1 { tgt = ($5 == "info" || $5 == "") ? "-" : $5 " " $4;
                  printf "%-40s %14s %-6s %-14s %s\n", $1, $2, $3, tgt, $6 }
         BEGIN { printf "%-40s %14s %-6s %-14s %s\n", "what", "measured", "unit", "target", "result" }' "$CSV"
grep -q ",FAIL$" "$CSV" && status=1
[ $status = 0 ] && echo "ALL PASS" || echo "SOME CHECKS FAILED"
exit $status
