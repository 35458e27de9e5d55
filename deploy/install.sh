#!/bin/bash
# Install edge-agent as a systemd service on Debian / Raspberry Pi OS (arm64 or x86-64).
#
#   sudo deploy/install.sh                 install or upgrade, enable and (re)start
#   sudo deploy/install.sh --uninstall     stop, disable, remove the unit and the venv
#                                          (keeps /etc/edge-agent and the state)
#   sudo deploy/install.sh --uninstall --purge   also remove configuration and state
#   sudo deploy/install.sh --with-torch    also install torch, so that the agent can run QAT
#                                          bursts ([bursts] enabled = true; about 1 GB of disk)
#   sudo deploy/install.sh --root /mnt/img  install into a root file system whose
#                                          systemd is not running (image builds, chroots)
#
# Idempotent: running it again upgrades the package in place and never overwrites an
# existing /etc/edge-agent/agent.toml or model.eab.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=/
PREFIX=/opt/edge-agent
UNIT=edge-agent.service
PROXY_UNIT=edge-agent-proxy.service
CACHE=/var/cache/edge-agent     # the unit's CacheDirectory= (its $CACHE_DIRECTORY)
ACTION=install
PURGE=0
START=1
VENV=1
EXTRAS=

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  cat <<USAGE
Options:
  --root DIR     target root file system (implies --no-start; enables the unit offline)
  --no-start     install and enable, but do not (re)start the service
  --no-venv      skip creating/upgrading the venv (it is provisioned separately)
  --with-torch   also install torch (edge-agent[train]) for QAT bursts
  --uninstall    remove the service, the unit and $PREFIX
  --purge        with --uninstall: also remove /etc/edge-agent and all state
  -h, --help     this text
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2:?--root needs a directory}; START=0; shift ;;
    --no-start) START=0 ;;
    --no-venv) VENV=0 ;;
    --with-torch) EXTRAS="[train]" ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT=${ROOT%/}
T=${ROOT}                       # prefix for target paths ("" for the running system)
say() { echo "edge-agent install: $*"; }
die() { echo "edge-agent install: error: $*" >&2; exit 1; }

[ -d "${T:-/}" ] || die "root $ROOT is not a directory"
[ "$(id -u)" -eq 0 ] || [ -n "$T" ] || die "run as root (sudo $0)"

live_systemd() { [ -z "$T" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# Run a command inside the target root (chroot when installing into another root).
in_root() { if [ -n "$T" ]; then chroot "$T" "$@"; else "$@"; fi; }

enable_unit() {
  if live_systemd; then
    systemctl daemon-reload
    systemctl enable "$UNIT" >/dev/null
  elif command -v systemctl >/dev/null && [ -n "$T" ]; then
    systemctl --root="$T" enable "$UNIT" >/dev/null 2>&1 || link_unit
  else
    link_unit
  fi
}

link_unit() {   # what `systemctl enable` does, for roots without a usable systemctl
  install -d "$T/etc/systemd/system/multi-user.target.wants"
  ln -sfn "/etc/systemd/system/$UNIT" "$T/etc/systemd/system/multi-user.target.wants/$UNIT"
}

install_venv() {
  in_root python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || die "python3 >= 3.11 is needed in $ROOT (apt install python3 python3-venv)"
  if [ ! -x "$T$PREFIX/venv/bin/python" ]; then
    say "creating venv $PREFIX/venv"
    install -d "$T$PREFIX"
    in_root python3 -m venv "$PREFIX/venv"
  fi
  local stage="$PREFIX/src"
  rm -rf "$T$stage"
  install -d "$T$stage"
  # Only what the package build needs: no venv, tests or build outputs.
  tar -C "$SRC" --exclude=.venv --exclude=.git --exclude=__pycache__ --exclude=out \
      -cf - pyproject.toml README.md edge_agent kernels | tar -C "$T$stage" -xf -
  say "installing edge-agent${EXTRAS} into $PREFIX/venv"
  in_root "$PREFIX/venv/bin/pip" install --quiet --upgrade "$stage$EXTRAS"
  rm -rf "$T$stage"
  install -d "$T$PREFIX/share"
  install -m 0644 "$SRC/README.md" "$T$PREFIX/share/README.md"
}

install_files() {
  install -d -m 0755 "$T/etc/edge-agent"
  if [ ! -e "$T/etc/edge-agent/agent.toml" ]; then
    install -m 0644 "$SRC/deploy/agent.toml" "$T/etc/edge-agent/agent.toml"
    say "wrote /etc/edge-agent/agent.toml"
  else
    say "keeping existing /etc/edge-agent/agent.toml"
  fi
  if [ ! -e "$T/etc/edge-agent/model.eab" ]; then
    install -m 0644 "$SRC/edge_agent/defaults/basicmotions.eab" "$T/etc/edge-agent/model.eab"
    say "installed the bundled BasicMotions model as /etc/edge-agent/model.eab"
  fi
  install -d "$T/etc/systemd/system"
  install -m 0644 "$SRC/systemd/$UNIT" "$T/etc/systemd/system/$UNIT"
  # The fan-in proxy (docs/fleet.md) is installed, not enabled: a fleet runs it on one host.
  install -m 0644 "$SRC/systemd/$PROXY_UNIT" "$T/etc/systemd/system/$PROXY_UNIT"
}

# Compile the kernels ahead of time where the service looks for them ($CACHE/numba/aot):
# the agent then runs without numba in memory. Never fails the install: without a C
# compiler or the Python headers the agent JIT-compiles the kernels instead.
compile_kernels() {
  local exe=$PREFIX/venv/bin/edge-agent out why
  if [ ! -x "$T$exe" ]; then
    say "kernels: AOT build unavailable (no $exe); the agent will JIT-compile"
    return 0
  fi
  say "kernels: compiling ahead of time into $CACHE/numba/aot (a minute or two on a Pi)"
  if out=$(in_root env -u EDGE_AGENT_JIT_CACHE -u NUMBA_CACHE_DIR -u EDGE_AGENT_KERNELS \
             CACHE_DIRECTORY="$CACHE" "$exe" compile-kernels 2>&1); then
    say "kernels: ${out##*$'\n'}"
  else
    why=$(sed -n 's/.*AOT build unavailable (\(.*\)); the engine.*/\1/p' <<<"$out" | tail -n 1)
    say "kernels: AOT build unavailable (${why:-$(tail -n 1 <<<"$out")}); the agent will JIT-compile"
  fi
  # DynamicUser=: systemd gives a new cache directory to the service's user when it
  # starts; in one that user already owns, what root just created must be given too.
  if [ -d "$T$CACHE/numba" ]; then
    chown -R --reference="$T$CACHE" "$T$CACHE/numba" \
      || say "kernels: warning: cannot give $CACHE/numba to the service's user"
  fi
}

do_install() {
  [ "$VENV" -eq 1 ] && install_venv
  install_files
  compile_kernels
  enable_unit
  if [ "$START" -eq 1 ] && live_systemd; then
    systemctl restart "$UNIT"
    say "started; check with: systemctl status edge-agent; sudo $PREFIX/venv/bin/edge-agent status"
  else
    say "installed and enabled; it starts at the next boot (or: systemctl start edge-agent)"
  fi
}

do_uninstall() {
  if live_systemd; then
    systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
  fi
  if live_systemd; then
    systemctl disable --now "$PROXY_UNIT" >/dev/null 2>&1 || true
  fi
  rm -f "$T/etc/systemd/system/multi-user.target.wants/$UNIT" "$T/etc/systemd/system/$UNIT" \
        "$T/etc/systemd/system/$PROXY_UNIT"
  live_systemd && systemctl daemon-reload
  rm -rf "${T:?}$PREFIX"
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$T/etc/edge-agent" "$T/var/lib/edge-agent" "$T/var/lib/private/edge-agent" \
           "$T/var/cache/edge-agent" "$T/var/cache/private/edge-agent"
    say "removed, including configuration and state"
  else
    say "removed; kept /etc/edge-agent and /var/lib/edge-agent (use --purge to remove them)"
  fi
}

if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
