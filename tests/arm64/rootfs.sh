#!/usr/bin/env bash
# Build (or reuse) a Debian bookworm arm64 root file system that runs on an x86-64 host
# under QEMU user-mode emulation (binfmt_misc): python3 and python3-venv (what
# deploy/install.sh needs on a Pi), and the pure-Python test tools (pytest, hypothesis)
# under /opt/testtools, fetched by the host's pip (fast; no emulation). edge-agent itself
# is NOT installed here: run.sh installs it with the real deploy/install.sh on a
# throw-away overlay of this base.
# Needs root (debootstrap, chroot, mount). Fails loudly when emulation cannot start.
# Usage: [PYTHON=host-python-with-pip] tests/arm64/rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: rootfs.sh DIR}
TEST_TOOLS=(pytest==8.4.2 pytest-timeout==2.4.0 hypothesis==6.140.3)
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
PYTHON=${PYTHON:-python3}

die() { echo "arm64 rootfs: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mounts); run as root or under sudo"
[ "$(uname -m)" = x86_64 ] || [ "$(uname -m)" = aarch64 ] || die "unsupported host $(uname -m)"

export DEBIAN_FRONTEND=noninteractive
if [ "$(uname -m)" != aarch64 ]; then
  if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "qemu-user-static and debootstrap are missing and there is no apt-get"
    echo "arm64 rootfs: installing qemu-user-static and debootstrap ..." >&2
    apt-get update -qq && apt-get install -y -qq qemu-user-static debootstrap >/dev/null
  fi
  # binfmt_misc lets the kernel hand aarch64 ELF files to qemu-aarch64-static.
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
      || die "cannot mount binfmt_misc (a container without CAP_SYS_ADMIN?): no arm64 emulation"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || die "$conf is missing (qemu-user-static too old?)"
    cat "$conf" > /proc/sys/fs/binfmt_misc/register \
      || die "cannot register qemu-aarch64 with binfmt_misc"
  fi
  grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "binfmt_misc entry qemu-aarch64 is disabled"
else
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
fi

# The first deb/URIs line of the host's apt sources: same mirror as the host (CI may only
# reach its own), else Debian's CDN.
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
         | grep -oE "https?://[^ ]+" | grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

stamp="$dir/.edge-agent-rootfs"
want="$SUITE $PACKAGES ${TEST_TOOLS[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "arm64 rootfs: reusing $dir" >&2
  exit 0
fi
if awk '{print $2}' /proc/mounts | grep -q "^$(realpath -m "$dir")/"; then
  die "something is mounted under $dir; unmount it before rebuilding"
fi
base_stamp="$dir/.edge-agent-base"
if [ ! -f "$base_stamp" ] || [ "$(cat "$base_stamp")" != "$SUITE $PACKAGES" ]; then
  echo "arm64 rootfs: debootstrap $SUITE arm64 from $mirror into $dir (several minutes) ..." >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 \
    || { tail -20 "$dir.debootstrap.log" >&2; die "debootstrap failed (log: $dir.debootstrap.log)"; }
  echo "$SUITE $PACKAGES" > "$base_stamp"
fi
cp /etc/resolv.conf "$dir/etc/resolv.conf"
# The host's CA bundle: it may hold a site CA that a proxy on the way to PyPI needs.
cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
trap 'umount "$dir/proc" 2>/dev/null || true' EXIT
arch=$(chroot "$dir" /usr/bin/python3 -c 'import platform; print(platform.machine())') \
  || die "cannot run the arm64 python3 under emulation"
[ "$arch" = aarch64 ] || die "the rootfs python reports machine $arch, not aarch64"
rm -rf "$dir/opt/testtools"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (set PYTHON=...)"
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT "$PYTHON" -m pip install -q --no-cache-dir \
    --disable-pip-version-check --root-user-action=ignore --target "$dir/opt/testtools" \
    --only-binary=:all: \
    --platform manylinux2014_aarch64 --python-version "$(chroot "$dir" python3 -c \
      'import sys; print("%d.%d" % sys.version_info[:2])')" --implementation cp \
    "${TEST_TOOLS[@]}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
chroot "$dir" python3 -c 'import sys; sys.path.insert(0, "/opt/testtools"); import pytest, hypothesis' \
  || die "the test tools were not installed into the rootfs"
echo "$want" > "$stamp"
echo "arm64 rootfs: ready at $dir (machine: $arch)" >&2
