#!/usr/bin/env bash
# setup-system.sh - the system half of 'make setup' on Debian 12: apt packages
# and the kernel-headers link BCC compiles against. Idempotent; silent when
# there is nothing to do; one line on stderr and a non-zero exit on failure.
#
#   scripts/setup-system.sh            runtime packages
#   scripts/setup-system.sh --test     also what the tests need (vagrant, bpftool, the bench peers)
#   scripts/setup-system.sh --bench    also the allocators benchmarked against (jemalloc, tcmalloc, mimalloc)
set -euo pipefail

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, /lib/modules links, BPF); try: sudo make setup"
[ -r /etc/debian_version ] || die "this setup knows Debian 12 only (no /etc/debian_version)"

RUNTIME="bpfcc-tools python3-bpfcc tcpreplay iproute2 python3-venv python3-dev gcc make libpcap0.8 libbpf-dev libxdp-dev"
TEST="vagrant bpftool"
BENCH="libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0"
want="$RUNTIME"
case "${1:-}" in
    --test) want="$want $TEST $BENCH" ;;
    --bench) want="$want $BENCH" ;;
esac

kver=$(uname -r)
# Headers for the running kernel when Debian has them (a stock Debian VM);
# otherwise the newest linux-headers-amd64, linked below (DESIGN.md).
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ ! -e "/lib/modules/$kver/build/Makefile" ]; then
    if installed "linux-headers-$kver" || apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
        want="$want linux-headers-$kver"
    else
        want="$want linux-headers-amd64"
    fi
fi

missing=""
for p in $want; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null \
        || die "apt-get install$missing failed"
fi

# BCC compiles against /lib/modules/$(uname -r)/build. A kernel Debian did not
# build (6.18 here) has none: point build at the -amd64 tree and source at the
# matching -common tree.
mod="/lib/modules/$kver"
if [ ! -e "$mod/build/Makefile" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    [ -n "$hdr" ] || die "no /usr/src/linux-headers-*-amd64 after installing linux-headers-amd64"
    common="${hdr%-amd64}-common"
    [ -d "$common" ] || die "$common is missing (it comes with $(basename "$hdr"))"
    mkdir -p "$mod"
    ln -sfn "$hdr" "$mod/build"
    ln -sfn "$common" "$mod/source"
    say "linked $mod/build -> $hdr"
    say "linked $mod/source -> $common"
fi
