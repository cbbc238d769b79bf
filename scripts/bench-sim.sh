#!/usr/bin/env bash
# bench-sim.sh — the simulator's speed targets (GOALS.md, Simulator), for docs/BENCHMARKS.md.
#
#   scripts/bench-sim.sh [RUNS]          RUNS per measurement, default 3 (the median is printed)
#
# Builds sluice (BUILD=build by default; MAKEFLAGS and CUDA=0/1 pass through to make), then runs
#   1. azure default, recorded:  sluice sim                 (azure_conv_2023, records to SQLite)
#   2. azure default, no record: sluice sim --no-record
#   3. 1M synthetic:             sluice sim --preset chat -n 1000000 --rate 5 --no-record
# and prints, per measurement, the median over RUNS of: process wall seconds (/usr/bin/time),
# CPU seconds (user + sys: the wall time on an idle core; compare the two to see contention),
# simulated requests per wall second (sluice's own figure, simulation loop only) and peak RSS.
# Targets: 1 and 2 under 1 s wall, 3 under 30 s wall, on one core.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${1:-3}
BUILD=${BUILD:-build}
BIN=$BUILD/sluice
TRACE=../shared/traces/azure_conv_2023.csv

command -v /usr/bin/time >/dev/null || { echo "bench-sim: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
[ -r "$TRACE" ] || { echo "bench-sim: $TRACE not found (run from a checkout beside ../shared)" >&2; exit 2; }

echo "== building $BIN"
make -j2 BUILD="$BUILD" "$BIN" >/dev/null

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# measure NAME ARGS...: RUNS runs, one line of medians
measure() {
    local name=$1
    shift
    : >"$TMP/wall" ; : >"$TMP/cpu" ; : >"$TMP/rate" ; : >"$TMP/rss"
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$TMP"/bench.db*
        /usr/bin/time -f "%e %U %S %M" -o "$TMP/time" "$BIN" sim --db "$TMP/bench.db" "$@" >"$TMP/out"
        read -r wall user sys rss <"$TMP/time"
        echo "$wall" >>"$TMP/wall"
        echo "$user $sys" | awk '{print $1 + $2}' >>"$TMP/cpu"
        echo "$rss" >>"$TMP/rss"
        sed -n 's/^simulated .* (\([0-9]*\) req\/s)$/\1/p' "$TMP/out" >>"$TMP/rate"
    done
    printf "%-28s wall %7.2f s   cpu %7.2f s   %9.0f simulated req/s   peak RSS %6.0f MiB\n" "$name" \
        "$(median <"$TMP/wall")" "$(median <"$TMP/cpu")" "$(median <"$TMP/rate")" \
        "$(median <"$TMP/rss" | awk '{print $1 / 1024}')"
}

echo "== sluice sim, median of $RUNS runs ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
measure "azure_conv_2023 recorded"
measure "azure_conv_2023 --no-record" --no-record
measure "1M chat --rate 5 --no-record" --preset chat -n 1000000 --rate 5 --no-record
