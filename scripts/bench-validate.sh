#!/usr/bin/env bash
# bench-validate.sh — the simulator-predicts-the-engine target (issue 8, docs/VALIDATION.md) on the
# CPU backend: for each model, `sluice profile` (timed: the target is under two minutes), then
# `sluice validate` on a sharegpt trace at a moderate rate and at one near saturation, each the
# median of --repeat engine runs against one simulation; prints every validate table and a summary
# of the gated figures' errors. Needs a quiet machine: any other load moves the engine's timings.
#
#   scripts/bench-validate.sh [--threads N] [--repeat R] [--db FILE] [--only stories|smollm2]
#   scripts/bench-validate.sh --inloop     only tests/bench/bench_inloop.c on SmolLM2: the serving
#                                          loop against back to back, and this machine's own noise
#
# Models and workloads (seeded, so every run replays the same requests):
#   stories260K  engine defaults;  sharegpt -n 60 --seed 3 at 4 req/s and 12 req/s (200 requests
#                at 12 req/s overload the engine: a queue, not near saturation)
#   SmolLM2-135M Q4_1  --max-num-batched-tokens 512 --max-num-seqs 32 --max-sequence-length 1024;
#                sharegpt -n 32 --seed 2 at 0.2 req/s and 0.5 req/s (one thread serves ~0.5 req/s)
# (near saturation, p90 of 16 requests is the second slowest, and the engine's own runs of the same
# trace spread over 25% on it: the traces are as long as a ~15-minute benchmark allows)
# Exit: 0 when every validation passed (5%), 1 when one did not, 2 on a failed command.
set -u
cd "$(dirname "$0")/.." || exit 2
BIN=${SLUICE_BIN:-build/sluice}
THREADS=1 REPEAT=3 DB="" ONLY="" INLOOP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --db) DB=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --inloop) INLOOP=1; shift ;;
        *) echo "usage: $0 [--threads N] [--repeat R] [--db FILE] [--only stories|smollm2] | --inloop" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "bench-validate: $BIN not built (make)" >&2; exit 2; }
if [ "$INLOOP" = 1 ]; then
    B=$(dirname "$BIN")
    make BUILD="$B" -j2 "$B/bench/bench_inloop" >/dev/null || exit 2
    exec "$B/bench/bench_inloop" models/SmolLM2-135M-Instruct.Q4_1.gguf -t "$THREADS" -c 6
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -n "$DB" ] || DB="$tmp/validate.db"
summary="$tmp/summary.txt"
status=0

run() { # NAME MODEL "KNOBS" "RUN1 ARGS" "RUN2 ARGS"
    local name=$1 model=$2 knobs=$3 t0 t1
    [ -f "$model" ] || { echo "bench-validate: SKIPPED $name: $model is absent"; return; }
    echo "=== $name: profile ($(date -u +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$BIN" profile -m "$model" --threads "$THREADS" -o "$name-t$THREADS" --db "$DB" $knobs || { status=2; return; }
    t1=$(date +%s.%N)
    awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s: profile took %.1f s\n", n, b - a }' >>"$summary"
    local args
    for args in "$4" "$5"; do
        echo "=== $name: validate $args ($(date -u +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
        # shellcheck disable=SC2086
        "$BIN" validate -m "$model" --profile "$name-t$THREADS" --threads "$THREADS" --repeat "$REPEAT" \
            --db "$DB" $knobs $args | tee "$tmp/out.txt"
        local rc=${PIPESTATUS[0]}
        [ "$rc" -le 1 ] || { status=2; continue; }
        [ "$rc" -eq 0 ] || status=1
        {
            echo "$name, $args:"
            grep -E "  (ok|over tolerance)$" "$tmp/out.txt" |
                awk '{ for (i = 1; i <= NF; i++) if ($i ~ /%$/) e = $i;
                       printf "    %-14s %8s  %s\n", substr($0, 3, 14), e, /ok$/ ? "ok" : "OVER" }'
            tail -1 "$tmp/out.txt" | sed 's/^/    /'
        } >>"$summary"
    done
}

[ "$ONLY" = smollm2 ] || run stories260K ../shared/models/stories260K.gguf "" \
    "--preset sharegpt -n 60 --seed 3 --rate 4" "--preset sharegpt -n 60 --seed 3 --rate 12"
[ "$ONLY" = stories ] || run smollm2-135m models/SmolLM2-135M-Instruct.Q4_1.gguf \
    "--max-num-batched-tokens 512 --max-num-seqs 32 --max-sequence-length 1024" \
    "--preset sharegpt -n 32 --seed 2 --rate 0.2" "--preset sharegpt -n 32 --seed 2 --rate 0.5"
echo
echo "=== summary ($THREADS thread(s), median of $REPEAT engine runs; error = (simulator - engine) / engine)"
cat "$summary"
exit $status
