#!/usr/bin/env bash
# Installs the system packages the build needs (idempotent; skips the package manager when everything is present):
# apt-get on Debian/Ubuntu (waiting for another apt/dpkg run to finish instead of failing), Homebrew on macOS.
# Sourced by scripts/test.sh and scripts/run-default.sh; also puts a Swift toolchain on PATH when one is installed
# in a usual place.
set -euo pipefail

case "$(uname -s)" in
  Darwin)
    # Accelerate is the BLAS on macOS; jpeg-turbo is keg-only, so its pkg-config folder is added by hand.
    formulae=(jpeg-turbo libpng tesseract open-mpi pkg-config)
    command -v brew >/dev/null 2>&1 || { echo "error: Homebrew not found (install it from https://brew.sh)" >&2; exit 1; }
    missing=()
    for f in "${formulae[@]}"; do
      brew list --formula "$f" >/dev/null 2>&1 || missing+=("$f")
    done
    [ ${#missing[@]} -eq 0 ] || brew install "${missing[@]}" >/dev/null
    prefix=$(brew --prefix)
    export PKG_CONFIG_PATH="$prefix/opt/jpeg-turbo/lib/pkgconfig:$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    ;;
  *)
    pkgs=(libopenblas-dev libjpeg62-turbo-dev libpng-dev libtesseract-dev tesseract-ocr-eng libopenmpi-dev openmpi-bin pkg-config python3-pip)
    # Ubuntu calls libjpeg-turbo's development package libjpeg-turbo8-dev.
    dpkg -s libjpeg-turbo8-dev >/dev/null 2>&1 && pkgs=("${pkgs[@]/libjpeg62-turbo-dev/libjpeg-turbo8-dev}")
    missing=()
    for p in "${pkgs[@]}"; do
      dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      SUDO=""
      [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      # Another apt or dpkg run (unattended upgrades on a fresh machine) holds the lock: wait up to 10 minutes.
      apt_opts=(-o DPkg::Lock::Timeout=600)
      $SUDO apt-get "${apt_opts[@]}" update -qq
      if ! apt-cache show libjpeg62-turbo-dev >/dev/null 2>&1; then
        missing=("${missing[@]/libjpeg62-turbo-dev/libjpeg-turbo8-dev}")
      fi
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${apt_opts[@]}" install -y -qq "${missing[@]}" >/dev/null
      echo "note: installed ${missing[*]}; if a build existed before, rebuild from scratch (rm -rf .build) so it sees them" >&2
    fi
    ;;
esac

if ! command -v swift >/dev/null 2>&1; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$d/swift" ] && export PATH="$d:$PATH"
  done
fi
command -v swift >/dev/null 2>&1 || { echo "error: no Swift toolchain found (install Swift 6 from swift.org and put it on PATH)" >&2; exit 1; }
