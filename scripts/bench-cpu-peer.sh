#!/usr/bin/env bash
# bench-cpu-peer.sh — sluice's CPU backend against llama.cpp on the same GGUF and thread count:
# pp (prompt tokens/s) and tg (decode tokens/s), as llama-bench measures them, and the ratios.
#
#   scripts/bench-cpu-peer.sh [-m MODEL] [-t THREADS] [-p 512] [-n 128] [-r 5] [-b SEQS] [--busy-core]
#                             [--build-peer-only]
#
# -b SEQS (> 1) adds sluice's batched decode: SEQS sequences decoding together, against one stream
# (llama-bench has no such figure).
#
# llama.cpp comes from the llama-cpp-python sdist (PyPI), whose vendored llama.cpp is built with
# cmake (Release, GGML_NATIVE=ON) into $SLUICE_PEER_DIR (default ~/.cache/sluice-peer), once; the
# build takes minutes. Our side is tests/bench/bench_cpu.c linked against $BUILD (default
# build-cpu; CUDA off).
# Both report the median of R runs. Run on a quiet machine: both engines spin threads on
# barriers, so other load on the cores distorts both figures. --busy-core measures exactly that:
# a spinning shell loop holds the last core for both engines' runs (the machine as shared with
# another job).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=2 P=512 N=128 R=5 B=1 BUILD_ONLY=0 BUSY=0
PEER_DIR=${SLUICE_PEER_DIR:-$HOME/.cache/sluice-peer}
BUILD=${BUILD:-build-cpu}
PEER_BUILD="$PEER_DIR/build-noamx"
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=$2; shift 2 ;;
        -t) THREADS=$2; shift 2 ;;
        -p) P=$2; shift 2 ;;
        -n) N=$2; shift 2 ;;
        -r) R=$2; shift 2 ;;
        -b) B=$2; shift 2 ;;
        --build-peer-only) BUILD_ONLY=1; shift ;;
        --busy-core) BUSY=1; shift ;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS] [-p PROMPT] [-n GEN] [-r REPS] [-b SEQS] [--busy-core] [--build-peer-only]" >&2; exit 2 ;;
    esac
done

build_peer() {
    local bench="$PEER_BUILD/bin/llama-bench"
    [ -x "$bench" ] && return 0
    mkdir -p "$PEER_DIR"
    local sdist
    sdist=$(ls "$PEER_DIR"/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)
    if [ -z "$sdist" ]; then
        python3 -m pip download --no-deps --no-binary :all: llama-cpp-python -d "$PEER_DIR" >&2
        sdist=$(ls "$PEER_DIR"/llama_cpp_python-*.tar.gz | head -1)
    fi
    local src="${sdist%.tar.gz}"
    [ -d "$src" ] || tar xzf "$sdist" -C "$PEER_DIR"
    # AMX off: ggml's AMX matmul dies with SIGILL (tilezero on an unconfigured tile) on the 2-core
    # Sapphire Rapids KVM guests we bench on, though AMX itself works there; the rest stays native.
    local no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -S "$src/vendor/llama.cpp" -B "$PEER_BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$PEER_BUILD" --target llama-bench -j"$(nproc)" >&2
}

build_peer
[ "$BUILD_ONLY" = 1 ] && exit 0
[ -f "$MODEL" ] || { echo "bench-cpu-peer: $MODEL not found (scripts/setup.sh installs SmolLM2)" >&2; exit 1; }

make BUILD="$BUILD" CUDA=0 -j2 "$BUILD/bench/bench_cpu" >/dev/null || exit 2

if [ "$BUSY" = 1 ]; then
    core=$(( $(nproc) - 1 ))
    taskset -c "$core" sh -c 'while :; do :; done' &
    busy_pid=$!
    trap 'kill "$busy_pid" 2>/dev/null' EXIT
    echo "a spinning loop holds core $core for both engines' runs"
fi

ours=$("$BUILD/bench/bench_cpu" "$MODEL" -t "$THREADS" -p "$P" -n "$N" -r "$R" -b "$B")
echo "$ours"
peer=$("$PEER_BUILD/bin/llama-bench" -m "$MODEL" -t "$THREADS" -p "$P" -n "$N" -r "$R" -o csv 2>/dev/null)
# llama-bench reports the mean; with -r R it also prints stddev. Take avg_ts per test.
peer_pp=$(echo "$peer" | awk -F, -v p="$P" 'NR==1{for(i=1;i<=NF;i++){gsub(/"/,"",$i); c[$i]=i}} NR>1{gsub(/"/,""); if($c["n_prompt"]==p && $c["n_gen"]==0) print $c["avg_ts"]}')
peer_tg=$(echo "$peer" | awk -F, -v n="$N" 'NR==1{for(i=1;i<=NF;i++){gsub(/"/,"",$i); c[$i]=i}} NR>1{gsub(/"/,""); if($c["n_gen"]==n && $c["n_prompt"]==0) print $c["avg_ts"]}')
echo "llama.cpp (llama-bench, $THREADS threads): pp$P ${peer_pp} t/s  tg$N ${peer_tg} t/s  (mean of $R)"
our_pp=$(echo "$ours" | sed -n "s/.* pp$P \([0-9.]*\) t\/s.*/\1/p")
our_tg=$(echo "$ours" | sed -n "s/.* tg$N \([0-9.]*\) t\/s.*/\1/p")
awk -v a="$our_pp" -v b="$peer_pp" -v c="$our_tg" -v d="$peer_tg" -v p="$P" -v n="$N" \
    'BEGIN{printf "ratio sluice/llama.cpp: pp%d %.2fx  tg%d %.2fx\n", p, a/b, n, c/d}'
