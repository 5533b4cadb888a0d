#!/usr/bin/env bash
# Runs citybrain's whole test suite. Needs only a Rust toolchain and a C compiler (librdkafka is
# built from source by rdkafka-sys); anything else a test needs is installed here when missing.
# Ends with one line "summary: N passed, N failed" over every test binary and doc test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh || echo "test.sh: scripts/install-test-deps.sh failed; tests needing tansu or chromium will fail" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee -a "$log" || status=$?
if [ "$status" -eq 0 ]; then
  cargo test --workspace --doc 2>&1 | tee -a "$log" || status=$?
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
