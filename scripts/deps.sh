#!/usr/bin/env bash
# Installs the Debian packages the build needs (idempotent; skips apt when everything is present).
set -euo pipefail
pkgs=(libopenblas-dev libjpeg62-turbo-dev libpng-dev libtesseract-dev tesseract-ocr-eng libopenmpi-dev openmpi-bin pkg-config python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v swift >/dev/null 2>&1; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$d/swift" ] && export PATH="$d:$PATH"
  done
fi
command -v swift >/dev/null 2>&1 || { echo "error: no Swift toolchain found (install Swift 6 from swift.org and put it on PATH)" >&2; exit 1; }
