#!/usr/bin/env bash
# test-validate.sh — `sluice profile` + `sluice validate` end to end on stories260K: profiles the
# engine on this machine, replays a short generated trace on the engine and in the simulator with
# that profile, and prints both side by side (what it measured is in the output). Then the refusals:
# a profile for another thread count (stale), a profile name that does not exist, a trace with a
# request over the context (named), a profile of the other --kv-dtype (either way), each exit 2;
# and an F16-KV run finds its profile under the default name `profile --kv-dtype f16` gives. About
# 60 s (100 s with the retries): validate runs the engine three times (its default --repeat) and
# compares the simulator with their medians.
#
# Settings, and why:
#   --threads 1      the engine's thread pool synchronises its workers with spinning barriers; on a
#                    2-core machine shared with other jobs, a descheduled worker stalls every
#                    barrier for a time slice and a 2-thread run's step times swing 10-50x from one
#                    minute to the next. One thread has no barrier to stall on.
#   small knobs      max_sequence_length 512, max_num_batched_tokens 256, max_num_seqs 16: a
#                    smaller profile grid (a few seconds) covering every step the trace produces.
#   --tolerance 50%, up to two retries, on all nine gated figures (TTFT p50/p90/p99, TPOT p50/p90,
#                    E2E p50/p99, output tok/s, preemptions)
#                    this is a smoke test of the whole path, not the 5% target (GOALS.md: targets are
#                    measured by commands, never by timed unit tests; docs/VALIDATION.md has the
#                    measured errors). On the 2-core development VM shared with other builds the
#                    machine's speed moves by 20-40% between the profile and the engine run a few
#                    seconds later: over five runs of this script at load 2-4, TTFT p50 -15..+16%,
#                    TTFT p90 -25..-5%, throughput within 0.5%, and TPOT p50 from +15% to -58% (a
#                    0.3-0.6 ms figure, the first to move when another process takes a core).
#                    50% with a retry (a fresh profile and run) passes there, and still fails a
#                    model that is broken rather than noisy: wrong units, a missing term, a KV pool
#                    of another size (preemptions), a clock mix-up move these figures 2x or more.
#
#   scripts/test-validate.sh                       uses build/sluice
#   SLUICE_BIN=build-val/sluice scripts/test-validate.sh
set -u
cd "$(dirname "$0")/.." || exit 2
BIN="${SLUICE_BIN:-build/sluice}"
MODEL="${SLUICE_MODEL:-../shared/models/stories260K.gguf}"
[ -x "$BIN" ] || { echo "test-validate: $BIN not built (make)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "test-validate: SKIPPED: $MODEL is absent (../shared not mounted)"; exit 0; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
db="$dir/val.db"
knobs=(--max-sequence-length 512 --max-num-batched-tokens 256 --max-num-seqs 16)
# The checks on ci-t1 pin the KV cache to F32, the setting they were tuned on (the default is F16
# on AVX-512 CPUs): with F16 on the Sapphire Rapids guest (2026-11-29, stories260K's 8-element
# heads) the speculation check failed all three of its attempts in two of four runs of this script;
# pinned to F32, the next two runs passed (one on a retry). The F16 profile and run are checked
# below, at a tolerance that holds.
kv32=(--kv-dtype f32)
fail=0
check() { # NAME EXPECTED_RC ACTUAL_RC [OUTPUT_FILE PATTERN]
    if [ "$3" -ne "$2" ] || { [ $# -ge 5 ] && ! grep -q -- "$5" "$4"; }; then
        echo "test-validate: FAIL: $1 (exit $3, expected $2)"
        [ $# -ge 4 ] && cat "$4"
        fail=1
    else
        echo "test-validate: ok: $1"
    fi
}

echo "=== load: $(uptime)"
profile() { # (re)profile as ci-t1
    "$BIN" profile -m "$MODEL" --threads 1 -o ci-t1 --db "$db" "${knobs[@]}" "${kv32[@]}" >"$dir/profile.txt" 2>&1 || {
        cat "$dir/profile.txt"; return 3; }
    head -4 "$dir/profile.txt"
}
attempt() { # profile, then validate against it; the validate exit status
    profile || return 3
    "$BIN" validate -m "$MODEL" --profile ci-t1 --threads 1 --preset sharegpt -n 40 --rate 4 --seed 3 \
        --tolerance 50% --db "$db" "${knobs[@]}" "${kv32[@]}" >"$dir/validate.txt" 2>&1
    local rc=$?
    cat "$dir/validate.txt"
    return $rc
}
attempt
rc=$?
# up to two retries, as for speculation below: under `make asan` on the Sapphire Rapids guest
# (2026-11-29 09:44) two attempts in a row failed, their anchors reading the machine at x0.82 and
# x1.34 of the profile while the engine ran near the profile's speed both times
for retry in 1 2; do
    [ $rc -eq 1 ] || break
    echo "test-validate: over tolerance; profiling again and retrying ($retry of 2; load: $(uptime))"
    attempt
    rc=$?
done
check "profile + validate within 50% (stories260K, 40 requests at 4 req/s)" 0 $rc "$dir/validate.txt" "PASS"

grep -q "machine speed now against the profile" "$dir/validate.txt"
check "validate re-times the anchor shapes and prices the simulation at today's speed" 0 $?
grep -q "sim, steps +/-3%" "$dir/validate.txt"
check "validate prints the simulator's figures with every step 3% cheaper and dearer" 0 $?
# 3 engine runs: 4 sets of the 4 small anchor shapes (before the first run and after each)
grep -q "steps of up to 16 tokens take x[0-9.]* (16 timings" "$dir/validate.txt"
check "validate times the anchors before the first engine run and after each" 0 $?
"$BIN" validate -m "$MODEL" --profile ci-t1 --threads 1 --preset sharegpt -n 10 --rate 4 --seed 3 --repeat 1 \
    --no-rescale --tolerance 1000% --db "$db" "${knobs[@]}" "${kv32[@]}" >"$dir/norescale.txt" 2>&1
check "--no-rescale prices at the profile's speed" 0 $? "$dir/norescale.txt" "at the profile's speed (--no-rescale)"

# speculative decoding: the simulator takes the engine's proposal and acceptance rates, and the
# drafts are priced as a chunk after each token (a model wrong there is 30-40% off on every decode)
# --repeat 3 as above: with one run, two anchor sets decide the machine's speed, and on the 2-core
# Sapphire Rapids guest two sets in a row read x1.61 and x1.37 while the engine between them ran at
# the profile's speed (2026-11-29: every decode priced 40-70% high, both attempts failed)
spec_attempt() {
    "$BIN" validate -m "$MODEL" --profile ci-t1 --threads 1 --preset sharegpt -n 40 --rate 4 --seed 3 --repeat 3 \
        --num-speculative-tokens 2 --prompt-lookup-min 1 --tolerance 50% --no-record --db "$db" "${knobs[@]}" "${kv32[@]}" \
        >"$dir/spec.txt" 2>&1
    local rc=$?
    grep -E "speculation:|machine speed|steps of up|TPOT p50|decode, 1 seq" "$dir/spec.txt"
    return $rc
}
spec_attempt
rc=$?
# A shared machine: up to two retries, each on a fresh profile. On the Sapphire Rapids guest
# (2026-11-29) the profile's price of the engine's own 2-3 token steps came out 9% high in some
# pairs and 50-74% high in others, with the anchors at x0.9-1.2: of eight runs of this script
# that day, six passed at once and two failed both of the two attempts they then had).
for retry in 1 2; do
    [ $rc -eq 1 ] || break
    echo "test-validate: speculation over tolerance; profiling again and retrying ($retry of 2; load: $(uptime))"
    profile || { echo "test-validate: FAILED (profiling for the speculation retry)"; exit 1; }
    spec_attempt
    rc=$?
done
check "speculation: validated with the engine's measured rates, within 50%" 0 $rc "$dir/spec.txt" \
    "speculation: the engine found drafts in"

"$BIN" validate -m "$MODEL" --profile ci-t1 --threads 2 --preset sharegpt -n 5 --db "$db" "${knobs[@]}" "${kv32[@]}" \
    >"$dir/stale.txt" 2>&1
check "a profile for another thread count is refused" 2 $? "$dir/stale.txt" "stale: measured with 1 threads"

"$BIN" validate -m "$MODEL" --profile nosuch --threads 1 --preset sharegpt -n 5 --db "$db" >"$dir/none.txt" 2>&1
check "a missing profile is refused" 2 $? "$dir/none.txt" "no engine profile 'nosuch'"

printf 'arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,20,10\n0.1,500,100\n' >"$dir/long.csv"
"$BIN" validate -m "$MODEL" --profile ci-t1 --threads 1 --trace "$dir/long.csv" --db "$db" "${knobs[@]}" "${kv32[@]}" \
    >"$dir/long.txt" 2>&1
check "a request over the context is refused and named" 2 $? "$dir/long.txt" "request 1: prompt 500 + output 100"

# the KV cache element type is part of a profile's identity (one pass each: --budget 1, a few
# seconds); the main check above ran on the default, which depends on the CPU (f16 with AVX-512)
p16="$(basename "$MODEL" .gguf)-cpu-t1-kvf16" p32="$(basename "$MODEL" .gguf)-cpu-t1"
"$BIN" profile -m "$MODEL" --threads 1 --kv-dtype f16 --budget 1 --db "$db" "${knobs[@]}" >"$dir/p16.txt" 2>&1
check "profile --kv-dtype f16 stores under the -kvf16 default name" 0 $? "$dir/p16.txt" \
    "stored as engine profile '$p16'"
"$BIN" profile -m "$MODEL" --threads 1 --kv-dtype f32 --budget 1 --db "$db" "${knobs[@]}" >"$dir/p32.txt" 2>&1
check "profile --kv-dtype f32 stores under the plain default name" 0 $? "$dir/p32.txt" \
    "stored as engine profile '$p32'"
"$BIN" validate -m "$MODEL" --profile "$p16" --threads 1 --kv-dtype f32 --preset sharegpt -n 5 --db "$db" \
    "${knobs[@]}" >"$dir/kv32.txt" 2>&1
check "an F16-KV profile is refused for an F32-KV run" 2 $? "$dir/kv32.txt" \
    "stale: measured with --kv-dtype f16 (2 bytes per KV element), this run uses --kv-dtype f32"
"$BIN" validate -m "$MODEL" --profile "$p32" --threads 1 --kv-dtype f16 --preset sharegpt -n 5 --db "$db" \
    "${knobs[@]}" >"$dir/kv16.txt" 2>&1
check "an F32-KV profile is refused for an F16-KV run" 2 $? "$dir/kv16.txt" "measured with --kv-dtype f32"
"$BIN" validate -m "$MODEL" --threads 1 --kv-dtype f16 --preset sharegpt -n 8 --rate 4 --seed 3 --repeat 1 \
    --tolerance 1000% --no-record --db "$db" "${knobs[@]}" >"$dir/kv16ok.txt" 2>&1
check "an F16-KV run is validated against the F16-KV profile of the default name" 0 $? "$dir/kv16ok.txt" \
    "profile $p16 "

[ $fail -eq 0 ] && echo "test-validate: PASSED" || echo "test-validate: FAILED"
exit $fail
