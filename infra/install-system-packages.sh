#!/usr/bin/env bash
# Installs the Debian packages Lodestone's test suite and media pipeline need, if missing.
# Idempotent: does nothing (and needs no network) when everything is present.
#
#   install-system-packages.sh                        everything (make test, CI, production)
#   install-system-packages.sh ffmpeg poppler-utils   only these packages
#   install-system-packages.sh --if-possible ffmpeg   the same, but when they cannot be
#       installed (no root or sudo, no apt-get, no network) say so and exit 0: `make run`
#       starts the demo anyway, and the demo says what is missing.
set -euo pipefail

all=(chromium ffmpeg poppler-utils qpdf nginx-light libnginx-mod-http-cache-purge make postgresql-client wrk)

# The command that shows a package is installed.
command_of() {
    case "$1" in
        poppler-utils) echo pdftotext ;;
        nginx-light) echo nginx ;;
        libnginx-mod-http-cache-purge) echo /usr/lib/nginx/modules/ngx_http_cache_purge_module.so ;;
        postgresql-client) echo psql ;;
        chromium | ffmpeg | qpdf | make | wrk) echo "$1" ;;
        *) return 1 ;;
    esac
}

if_possible=0
if [ "${1:-}" = "--if-possible" ]; then
    if_possible=1
    shift
fi
if [ $# -gt 0 ]; then wanted=("$@"); else wanted=("${all[@]}"); fi

need=()
for package in "${wanted[@]}"; do
    if ! program=$(command_of "$package"); then
        echo "install-system-packages.sh: unknown package $package (known: ${all[*]})" >&2
        exit 2
    fi
    { [ -e "$program" ] || command -v "$program"; } >/dev/null || need+=("$package")
done
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

cannot() {
    if [ "$if_possible" -eq 1 ]; then
        echo "Could not install ${need[*]} ($1): carrying on without." >&2
        exit 0
    fi
    echo "Cannot install ${need[*]}: $1" >&2
    exit 1
}

command -v apt-get >/dev/null || cannot "no apt-get on this machine"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || cannot "not root, and no sudo"
    # Without a terminal to ask for a password, sudo must not wait for one.
    if [ "$if_possible" -eq 1 ] && ! [ -t 0 ]; then SUDO="sudo -n"; else SUDO="sudo"; fi
fi
echo "Installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq || echo "apt-get update failed: trying the package lists at hand" >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null || cannot "apt-get install failed"
