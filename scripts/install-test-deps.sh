#!/usr/bin/env bash
# Installs what citybrain's tests need beyond a Rust toolchain and a C compiler:
# - tansu, a Kafka-compatible broker the end-to-end tests also run against (cargo install,
#   ~14 minutes once; skipped when `tansu` is in cargo's bin directory or on PATH);
# - Chromium (and the DejaVu fonts the wall page names), with Debian's packages, for
#   tests/tests/end_to_end/wall_browser.rs, which checks the wall page in a real headless
#   browser (skipped when /usr/bin/chromium is there; needs root or sudo, and apt-get).
# Cheap when both are installed, so it runs before every test run.
set -euo pipefail

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ ! -x "$cargo_bin/tansu" ] && ! command -v tansu >/dev/null 2>&1; then
  echo "install-test-deps: installing tansu 0.6.0 (cargo install, about 14 minutes)" >&2
  cargo install --quiet tansu --version 0.6.0 --features dynostore
fi

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: /usr/bin/chromium is missing and there is no apt-get: install Chromium by hand" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-test-deps: /usr/bin/chromium is missing; run as root (or install sudo) to install it" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi

echo "install-test-deps: installing chromium (apt-get)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Wait for another apt/dpkg run (e.g. unattended upgrades) rather than fail on its lock.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-test-deps: apt-get could not install chromium" >&2
  exit 1
fi
/usr/bin/chromium --version >&2
