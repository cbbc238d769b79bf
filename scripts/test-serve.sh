#!/usr/bin/env bash
# test-serve.sh — the serving integration tests: starts `sluice serve` with stories260K on a free
# loopback port, runs tests/serve/test_http_api.py (stdlib HTTP: endpoints, streaming, errors,
# disconnects, 429, SIGTERM, penalties, top logprobs, best_of), tests/serve/test_settings.py
# (--settings-from a `sluice tune` recommendation, flags over it, the recorded run; bad store / id
# exit 2; --kv-dtype f16; speculative decoding keeps the text, streamed and not, and /metrics counts the
# drafts; these start their own servers) and tests/serve/test_openai_client.py (the official `openai` client;
# prints SKIPPED when the package is missing) against it, then stops it with SIGTERM and checks
# that it exits 0.
#
#   scripts/test-serve.sh                 uses build/sluice
#   SLUICE_BIN=build-http/sluice scripts/test-serve.sh
set -u
cd "$(dirname "$0")/.." || exit 2
export SLUICE_BIN="${SLUICE_BIN:-build/sluice}"
MODEL="${SLUICE_MODEL:-../shared/models/stories260K.gguf}"
[ -x "$SLUICE_BIN" ] || { echo "test-serve: $SLUICE_BIN not built (make)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "test-serve: SKIPPED: $MODEL is absent (../shared not mounted)"; exit 0; }

log=$(mktemp)
"$SLUICE_BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --chat-template chatml 2>"$log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null; rm -f "$log"; }
trap cleanup EXIT
port=""
for _ in $(seq 1 300); do
    port=$(sed -n 's/.*ready: .* on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "test-serve: the server did not start:" >&2
    cat "$log" >&2
    exit 1
fi
export SLUICE_PORT=$port
echo "test-serve: sluice serve (pid $pid) on 127.0.0.1:$port"

failed=()
python3 tests/serve/test_http_api.py || failed+=(test_http_api)
python3 tests/serve/test_settings.py || failed+=(test_settings)
if python3 -c 'import openai' 2>/dev/null; then
    python3 tests/serve/test_openai_client.py || failed+=(test_openai_client)
else
    echo "test-serve: SKIPPED test_openai_client.py: the openai package is not installed (scripts/setup.sh installs it)"
fi

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "test-serve: the server exited $rc on SIGTERM (expected 0)"
    cat "$log"
    failed+=(sigterm-exit)
fi
trap - EXIT
rm -f "$log"
if [ ${#failed[@]} -eq 0 ]; then
    echo "test-serve: ALL SERVING TESTS PASSED"
else
    echo "test-serve: FAILED: ${failed[*]}"
    exit 1
fi
