#!/usr/bin/env bash
# device-deps.sh — fetch the Debian packages the full `sluice` links (gsl, sqlite3, cJSON,
# libmicrohttpd, cmocka: runtime and headers) into .devdebs/, for a GPU machine that has none of
# them and no package registry: carry .devdebs with the run, and scripts/device-check.sh unpacks
# them into /tmp/devroot (never into /) and builds against them. About 4.5 MB. Run here, once.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devdebs/' .git/info/exclude 2>/dev/null || echo '/.devdebs/' >>.git/info/exclude
mkdir -p .devdebs
cd .devdebs
apt-get download libgsl-dev libgsl27 libgslcblas0 libsqlite3-dev libsqlite3-0 libcjson-dev libcjson1 \
    libmicrohttpd-dev libmicrohttpd12 libcmocka-dev libcmocka0
ls -la
