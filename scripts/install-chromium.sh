#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the report's browser test. Idempotent: does nothing
# when a chromium binary is already on PATH. Needs root (or sudo) and apt; exits non-zero otherwise.
set -euo pipefail

find_chromium() {
  for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  return 1
}

if bin=$(find_chromium); then
  echo "chromium already installed: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: apt-get not found; install Chromium by hand" >&2
  exit 2
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-chromium: needs root (or passwordless sudo) to apt-get install chromium" >&2
    exit 2
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# A stale or missing package index is the usual reason the install fails: refresh it first.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

bin=$(find_chromium) || { echo "install-chromium: chromium not on PATH after install" >&2; exit 1; }
echo "chromium installed: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
