#!/usr/bin/env bash
# Installs the Debian packages Lodestone's test suite and media pipeline need, if missing.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail

need=()
command -v chromium  >/dev/null || need+=(chromium)
command -v ffmpeg    >/dev/null || need+=(ffmpeg)
command -v pdftotext >/dev/null || need+=(poppler-utils)
command -v qpdf      >/dev/null || need+=(qpdf)
command -v nginx     >/dev/null || need+=(nginx-light)
command -v make      >/dev/null || need+=(make)
command -v psql      >/dev/null || need+=(postgresql-client)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "Installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
