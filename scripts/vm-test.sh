#!/usr/bin/env bash
# vm-test.sh - 'make vm-test': the project's tests inside a Debian 12 VM on Debian's stock kernel, the
# kernel users run (their VMs boot bookworm's 6.1, not this machine's).
#
# The root file system is built once with debootstrap (bookworm, its stock kernel and headers, the
# project's own system set-up and venv, made in a chroot at native speed) into a raw ext4 image under
# $NTA_VM_DIR (default .vm/ in the project), and kept: a second run reuses it and only copies the project's
# current tree in. The VM boots that kernel in qemu, with KVM when a guest boots under it and emulation
# (TCG) otherwise, and runs 'CI=true make test' as its only job; its summary is printed here and its exit
# status is this script's. Everything else it made (mounts, loop devices, qemu, temporary files) is gone
# at the end, whatever happens; the console log of the last run is kept beside the image.
#
# Environment: NTA_VM_DIR, NTA_VM_MIRROR (default http://deb.debian.org/debian), NTA_VM_TIMEOUT (minutes
# the tests may take, default 150), NTA_VM_MEM (MiB, default 6144), NTA_VM_ACCEL (kvm or tcg: skip the
# probe), NTA_VM_TESTS (what pytest runs, default tests: e.g. tests/netns/test_nic.py after a change to it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "$ROOT/.." && pwd)/shared
VM_DIR=${NTA_VM_DIR:-$ROOT/.vm}
MIRROR=${NTA_VM_MIRROR:-http://deb.debian.org/debian}
TIMEOUT_MIN=${NTA_VM_TIMEOUT:-150}
TESTS=${NTA_VM_TESTS:-tests}
MEM=${NTA_VM_MEM:-6144}
IMAGE=$VM_DIR/debian12-stock.img
IMAGE_GB=10
IMAGE_VERSION=1 # bump when what goes into the image changes: it is built again
GUEST_ROOT=/root/nta-harness
BOOT_WAIT=90 # seconds for a guest under KVM to say it booted before emulation is used instead

say() { echo "vm-test: $*"; }
die() { echo "vm-test: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, loop devices, chroot); try: sudo make vm-test"
[ -r /etc/debian_version ] || die "this knows Debian 12 hosts only (no /etc/debian_version)"

# -- what it makes, removed at the end whatever happens ---------------------------------------------

MNT="" TMP="" QEMU_PID=""
cleanup() {
    set +e
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
    if [ -n "$MNT" ]; then
        for m in dev/pts dev proc sys; do mountpoint -q "$MNT/$m" && umount -l "$MNT/$m"; done
        mountpoint -q "$MNT" && umount "$MNT"
        rmdir "$MNT" 2>/dev/null
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- what it needs ----------------------------------------------------------------------------------

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=""
for p in qemu-system-x86 debootstrap rsync e2fsprogs curl; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed (no network to Debian's mirror?)"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || die "no qemu: apt-get install$missing failed"
fi
command -v qemu-system-x86_64 >/dev/null || die "no qemu: qemu-system-x86_64 is missing after installing qemu-system-x86"
[ -d "$SHARED/pcaps" ] || die "the shared captures are not at $SHARED/pcaps (the tests use them)"
mkdir -p "$VM_DIR"
fresh=0
[ -f "$IMAGE" ] && [ "$(cat "$VM_DIR/image-version" 2>/dev/null)" = "$IMAGE_VERSION" ] || fresh=1
need_gb=$((fresh ? IMAGE_GB + 1 : 2))
free_gb=$(($(df -Pk "$VM_DIR" | awk 'NR == 2 {print $4}') / 1048576))
[ "$free_gb" -ge "$need_gb" ] || die "too little disk: $free_gb GiB free under $VM_DIR, $need_gb GiB needed (set NTA_VM_DIR)"
if [ "$fresh" = 1 ]; then
    curl -sfI --max-time 20 "$MIRROR/dists/bookworm/Release" >/dev/null \
        || die "no debootstrap mirror: $MIRROR/dists/bookworm/Release cannot be fetched (set NTA_VM_MIRROR)"
fi
TMP=$(mktemp -d /tmp/nta-vm-test.XXXXXX)
MNT=$TMP/root

# -- the image: a chroot at native speed does what takes long under emulation ------------------------

# The set-up in the chroot uses this machine's network, so it trusts this machine's certificate
# authorities (a TLS-intercepting proxy's among them, if any): their bundle, for the set-up only.
HOST_CA=/tmp/nta-host-ca.crt
in_root() {
    chroot "$MNT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        PIP_CERT=$HOST_CA REQUESTS_CA_BUNDLE=$HOST_CA SSL_CERT_FILE=$HOST_CA PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

mount_image() {
    mkdir -p "$MNT"
    mount -o loop "$IMAGE" "$MNT" || die "cannot loop-mount $IMAGE"
    mount -t proc proc "$MNT/proc"
    mount -t sysfs sys "$MNT/sys"
    mount --bind /dev "$MNT/dev"
    mount --bind /dev/pts "$MNT/dev/pts"
    cp /etc/resolv.conf "$MNT/etc/resolv.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$MNT$HOST_CA"
}

unmount_image() {
    rm -f "$MNT$HOST_CA"
    for m in dev/pts dev sys proc; do umount "$MNT/$m"; done
    umount "$MNT"
}

build_image() {
    local t0=$SECONDS
    say "building the image: debootstrap bookworm from $MIRROR into $IMAGE (once; kept for the next runs)"
    rm -f "$IMAGE" "$VM_DIR/image-version"
    truncate -s "${IMAGE_GB}G" "$IMAGE"
    mkfs.ext4 -q -F -L nta-vm "$IMAGE"
    mkdir -p "$MNT"
    mount -o loop "$IMAGE" "$MNT" || die "cannot loop-mount $IMAGE"
    debootstrap --variant=minbase --include=systemd-sysv,udev,kmod,procps,iproute2,ca-certificates,make \
        bookworm "$MNT" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 \
        || { tail -n 3 "$TMP/debootstrap.log" >&2; die "debootstrap failed (its log's last lines above)"; }
    umount "$MNT"
    mount_image
    cat >"$MNT/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $MIRROR-security bookworm-security main
EOF
    echo "nta-vm" >"$MNT/etc/hostname"
    echo "/dev/vda / ext4 defaults 0 1" >"$MNT/etc/fstab"
    in_root apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq --no-install-recommends \
        linux-image-amd64 linux-headers-amd64 initramfs-tools >"$TMP/apt.log" 2>&1 \
        || { tail -n 3 "$TMP/apt.log" >&2; die "installing Debian's stock kernel in the image failed"; }
    cat >"$MNT/etc/systemd/system/nta-vm-test.service" <<'EOF'
[Unit]
Description=nta-harness: make test, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/root/nta-vm-test.sh

[Install]
WantedBy=multi-user.target
EOF
    in_root systemctl enable nta-vm-test.service >/dev/null 2>&1
    in_root systemctl mask serial-getty@ttyS0.service getty@tty1.service >/dev/null 2>&1
    unmount_image
    echo "$IMAGE_VERSION" >"$VM_DIR/image-version"
    say "image built in $((SECONDS - t0)) s"
}

[ "$fresh" = 1 ] && build_image

# The project as it is now, at the path its venv was made for; its system set-up, venv and build done
# here (apt, PyPI and gcc at native speed): the guest's 'make test' then finds them made.
t0=$SECONDS
mount_image
mkdir -p "$MNT$GUEST_ROOT" "$MNT/root/shared/pcaps"
rsync -a --delete --exclude=/.venv --exclude=/build --exclude=/.vm --exclude=/.git --exclude=__pycache__ \
    --exclude='harness/_*_c*.so' --exclude=harness/libnta.so --exclude='*.egg-info' "$ROOT/" "$MNT$GUEST_ROOT/"
rsync -a --delete "$SHARED/pcaps/" "$MNT/root/shared/pcaps/"
# the guest's only job, written on every run: run the tests, print their end, say its exit status, power off
cat >"$MNT/root/nta-vm-test.sh" <<EOF
#!/bin/bash
exec >/dev/ttyS0 2>&1
echo "NTA-VM-BOOTED \$(uname -r)"
cd $GUEST_ROOT && CI=true make test TESTS="$TESTS" </dev/null >/root/vm-test.log 2>&1
rc=\$?
tail -n 40 /root/vm-test.log
echo "NTA-VM-TEST-EXIT=\$rc"
sync
systemctl poweroff --force --force
EOF
chmod +x "$MNT/root/nta-vm-test.sh"
in_root "$GUEST_ROOT/scripts/setup-system.sh" --test >"$TMP/setup.log" 2>&1 \
    && in_root make -C "$GUEST_ROOT" .venv/.installed build build-tests >>"$TMP/setup.log" 2>&1 \
    || { tail -n 5 "$TMP/setup.log" >&2; die "the project's set-up in the image failed (its last lines above)"; }
kernel=$(ls "$MNT"/boot/vmlinuz-* | sort -V | tail -n 1)
kver=${kernel##*/vmlinuz-}
cp "$kernel" "$TMP/vmlinuz"
cp "$MNT/boot/initrd.img-$kver" "$TMP/initrd"
[ -e "$MNT/lib/modules/$kver/build/Makefile" ] || die "the image has no headers for its kernel $kver"
unmount_image
say "the project copied in and set up in $((SECONDS - t0)) s; booting Debian's stock kernel $kver"

# -- the VM -------------------------------------------------------------------------------------------

boot() { # accel, console log
    local cpu=max
    [ "$1" = kvm ] && cpu=host,-arch-capabilities # a nested KVM refuses to set IA32_ARCH_CAPABILITIES
    qemu-system-x86_64 -machine q35,accel="$1" -cpu "$cpu" -smp 2 -m "$MEM" -nographic -no-reboot \
        -kernel "$TMP/vmlinuz" -initrd "$TMP/initrd" \
        -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 net.ifnames=0" \
        -drive file="$IMAGE",format=raw,if=virtio -nic none </dev/null >"$2" 2>&1 &
    QEMU_PID=$!
}

wait_for() { # pattern, log, seconds: 0 when the log shows it in time
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        grep -q "$1" "$2" 2>/dev/null && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || return 1
        sleep 2
    done
    return 1
}

log=$TMP/console.log
accel=${NTA_VM_ACCEL:-}
# Whether a guest boots under KVM is this host's and this qemu's: remembered once probed.
host_id="$(uname -r) $(qemu-system-x86_64 --version | head -n 1)"
verdict=$VM_DIR/kvm-verdict
t0=$SECONDS
if [ -z "$accel" ] && [ -w /dev/kvm ] && [ "$(head -n 1 "$verdict" 2>/dev/null)" != "$host_id" ]; then
    boot kvm "$log"
    if wait_for NTA-VM-BOOTED "$log" "$BOOT_WAIT"; then
        accel=kvm
    else
        if kill -0 "$QEMU_PID" 2>/dev/null; then
            why="the guest did not boot in $BOOT_WAIT s"
        else
            why="qemu ended: $(grep -m 1 -i "error" "$log" || tail -n 1 "$log")"
        fi
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
        QEMU_PID=""
        printf '%s\n%s\n' "$host_id" "$why" >"$verdict"
        say "KVM: $why; emulation (TCG) instead (remembered in $verdict)"
    fi
elif [ -z "$accel" ] && [ -f "$verdict" ]; then
    say "KVM: $(sed -n 2p "$verdict") when last tried on this host; emulation (TCG) (remove $verdict to try again)"
fi
if [ "$accel" != kvm ]; then
    accel=tcg
    boot tcg "$log"
    wait_for NTA-VM-BOOTED "$log" 600 || { tail -n 20 "$log" >&2; die "the guest did not boot under emulation in 10 minutes"; }
fi
booted=$(grep -o "NTA-VM-BOOTED [^[:space:]]*" "$log" | head -n 1)
say "booted ${booted#NTA-VM-BOOTED } under $([ "$accel" = kvm ] && echo KVM || echo 'emulation (TCG)') in $((SECONDS - t0)) s; make test running (up to $TIMEOUT_MIN minutes)"
wait_for "NTA-VM-TEST-EXIT=" "$log" $((TIMEOUT_MIN * 60)) || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=""
cp "$log" "$VM_DIR/last-run.log"
rc=$(grep -o "NTA-VM-TEST-EXIT=[0-9]*" "$log" | tail -n 1 | cut -d= -f2)
[ -n "$rc" ] || { tail -n 20 "$log" >&2; die "the guest ended without the tests' exit status (timed out after $TIMEOUT_MIN minutes, or crashed): $VM_DIR/last-run.log"; }
sed -n '/NTA-VM-BOOTED/,/NTA-VM-TEST-EXIT/p' "$log" | grep -v "NTA-VM-BOOTED" | tail -n 25
say "make test on Debian's stock $kver ($accel): exit status $rc, $((SECONDS - t0)) s from boot (console: $VM_DIR/last-run.log)"
exit "$rc"
