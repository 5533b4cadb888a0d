#!/usr/bin/env bash
# A bounded fuzz run: every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET seconds
# (default 20) on the committed corpus (fuzz/corpus/<target>/), which it does not change.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# FUZZ_RUNS / FUZZ_SEED: see below. FUZZ_TARGETS="decode_report config_rules" limits the run to some targets; FUZZ_ENGINE=0 runs
# only the decoder targets (the config targets link the engine: rdkafka, timely, ...).
# Needs the nightly toolchain (`cargo +nightly`); without it this says why and exits 0. Installs
# cargo-fuzz when missing. Builds into target/fuzz/. A crash or a property violation fails the
# run; the input is saved in fuzz/artifacts/<target>/ and the command to reproduce it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac
export CARGO_INCREMENTAL=0

if ! cargo +nightly --version > /dev/null 2>&1; then
  echo "fuzz.sh: skipped: no nightly toolchain (cargo-fuzz needs \`cargo +nightly\`; install it with \`rustup toolchain install nightly\`)"
  exit 0
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

decoders="decode_mine_reading decode_farm_reading decode_report decode_registry"
configs="config_main config_rules config_kpis config_mapping"
features=()
if [ "${FUZZ_ENGINE:-1}" = 0 ]; then
  features=(--no-default-features)
  targets=${FUZZ_TARGETS:-$decoders}
else
  targets=${FUZZ_TARGETS:-$decoders $configs}
fi

# FUZZ_RUNS=N FUZZ_SEED=S: N inputs per target from seed S instead of a time bound, so the run
# is the same on every machine (CI: a failure there is a regression, never luck).
if [ -n "${FUZZ_RUNS:-}" ]; then
  bound=(-runs="$FUZZ_RUNS" -seed="${FUZZ_SEED:-1}")
  echo "fuzz.sh: $FUZZ_RUNS runs per target, seed ${FUZZ_SEED:-1}"
else
  bound=(-max_total_time="$seconds")
fi

# New inputs go to a scratch directory (the first corpus directory libFuzzer is given), so the
# committed corpus only changes by hand (see fuzz/README.md).
scratch=target/fuzz/corpus-scratch
build=(--target-dir target/fuzz "${features[@]}")
start=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz.sh: built in $(($(date +%s) - start)) s"
failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $targets; do
  rm -rf "${scratch:?}/$target"
  mkdir -p "$scratch/$target"
  echo "fuzz.sh: $target"
  if cargo +nightly fuzz run "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    "${bound[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 > "$log" 2>&1; then
    grep -E '^Done|^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" || true
  else
    # libFuzzer's progress lines say nothing about the failure.
    grep -vE '^#[0-9]|^INFO:|^[[:space:]]*NEW_FUNC' "$log" >&2 || true
    failed+=("$target")
  fi
  rm -rf "${scratch:?}/$target"
done
echo "fuzz.sh: done in $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: no failures"
